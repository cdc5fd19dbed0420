"""Plans and billing: subscriptions, who may change their plans, trials, entitlements,
billable-device counting, endpoint-agent lists, estimates and the billing ledger.

Other modules ask `plans.entitlements(session, subscription_id)` which security services
a subscription may use; everything here reads time through tapwatch.clock.
"""

from tapwatch.plans.features import Entitlements, NotEntitled, entitlements

__all__ = ["Entitlements", "NotEntitled", "entitlements"]
