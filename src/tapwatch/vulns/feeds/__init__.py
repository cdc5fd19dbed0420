"""Feed parsers: each turns one JSON document into feed records, reporting bad parts by location."""
