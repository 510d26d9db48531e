"""roomstate and a Synapse homeserver's database: import its rooms, verify its state, weigh it.

- :mod:`.source` reads a Synapse database, SQLite or PostgreSQL, read-only always;
- :mod:`.load` imports its rooms into a store (``roomstate synapse import``);
- :mod:`.verify` compares the state before every event with Synapse's
  (``roomstate synapse verify``);
- :mod:`.report` sets the rows and bytes of Synapse's state tables beside the store's
  (``roomstate synapse report``);
- :mod:`.export` reads the directory that Synapse's ``admin_cmd export-data`` writes
  (``roomstate import DIR``);
- :mod:`.cli` holds those commands.

What is read of Synapse's schema is its tables' documented columns (``events``,
``event_json``, ``event_edges``, ``rejections``, ``rooms``, ``state_groups``,
``state_groups_state``, ``state_group_edges``, ``event_to_state_groups``); no Synapse
code is used.
"""
