"""Every table of the database: importing this module registers all models on `Base.metadata`.

The inventory lives in models.py; each later capability (alerts, vulnerabilities, the
console's users, plans, sensors) keeps its tables in a module of its own and is listed here,
so Alembic and the schema test see the whole database.
"""

from tapwatch.store import (  # noqa: F401 - importing registers the tables
    alert_models,
    console_models,
    detect_models,
    integration_models,
    models,
    plan_models,
    sensor_models,
    vuln_models,
)
from tapwatch.store.models import Base

__all__ = ["Base", "alert_models", "console_models", "detect_models", "integration_models", "models",
           "plan_models", "sensor_models", "vuln_models"]
