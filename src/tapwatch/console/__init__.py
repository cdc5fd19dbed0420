"""The console: REST API and web UI over the inventory, with users, roles and an audit log."""
