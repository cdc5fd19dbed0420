"""Integrations with the rest of a security stack: SIEM forwarding, exports, CMDB, metrics, Zeek.

One module per job; `commands.py` holds their command-line groups.
"""
