"""``chainshare credit ...``: publish and manage credit records (records.py), read, score and follow them
(reading.py), person handles and details (persons.py), and the registry's Governance (govern.py)."""

from chainshare.cli import credential
from chainshare.cli.credit import govern, persons, reading  # noqa: F401  (they add their commands to the group)
from chainshare.cli.credit.records import (
    agency_of,
    group,
    parse_period,
    parse_subject,
    parse_time,
    plan_publish,
    publish_many,
    record_args,
)

group.add_command(credential.group)  # chainshare credit credential ...

__all__ = ["agency_of", "group", "parse_period", "parse_subject", "parse_time", "plan_publish", "publish_many",
           "record_args"]
