"""The explorer query API: stateless, read-only, any number of replicas."""
