"""The download mirror: finished deliverables of configured projects, mirrored verified to local disk.

`template` (pure paths), `platform` (what we ask of Gencove), `transfer` (one file, safely), `loop` (the
daemon's mirror loop), `webhook` (signed triggers), `command` (`transferd download`).
"""
