"""The sensor: live capture into the batch engine, rolling pcap, and store-and-forward to a console.

One job per module: `live` (AF_PACKET TPACKET_V3 packet source producing Chunks),
`engine` (periodic flush of the aggregation into the store, delta by delta), `rolling`
(the last N GB as rotating pcap files), `outbox` (on-disk queue of what goes to the
console), `uploader` (sends the outbox, deletes only what the console acknowledged),
`wire` (the upload format shared with the console), `health` (rates, drops, states) and
`commands` (the `tapwatch sensor` and `tapwatch sensors` command groups).
"""
