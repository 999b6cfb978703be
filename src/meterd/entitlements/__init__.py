"""Features, entitlements and grants: who may use what, and how much is left."""
