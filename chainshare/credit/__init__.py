"""Credit records: subjects (USCC, person handles), the record lifecycle read back from events, scoring under
a Governance-installed rule, provenance bundles an auditor verifies offline, and a resumable watch.

Everything here reads the chain only through a ``CreditSource`` (a node's ChainStore, or a node's JSON-RPC),
so the node's REST answers, the CLI over the API and the CLI over a stopped node's data directory compute
the same thing with the same functions. The consensus rules themselves live in the CreditRegistry contract
(``chainshare.execution.contracts.credit_registry``).
"""
