"""The SQLite schema, versioned, with forward-only migrations.

``MIGRATIONS[v]`` upgrades a version ``v - 1`` file to ``v``; a new file runs them all. A file
written by a newer tickflow is refused (never downgraded or overwritten).
"""

from __future__ import annotations

from engine.storage.views import RUNS_VIEW, STEPS_VIEW

__all__ = ["MIGRATIONS", "PRAGMAS", "SCHEMA_VERSION"]

SCHEMA_VERSION = 6

# v1: the first release of the schema.
_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE symbols (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    phase TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL,
    last_processed REAL,
    last_error TEXT,
    last_tick BLOB,
    updated_at REAL NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    workflow TEXT NOT NULL,
    symbol TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    priority INTEGER NOT NULL,
    tick BLOB NOT NULL,
    tick_ts REAL NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    error TEXT
);
CREATE INDEX runs_by_state ON runs (state);
CREATE TABLE steps (
    run_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    output BLOB,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (run_id, step)
);
CREATE TABLE orders (
    client_order_id TEXT PRIMARY KEY,
    run_id INTEGER,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    status TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE fills (
    client_order_id TEXT PRIMARY KEY REFERENCES orders (client_order_id),
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    price REAL NOT NULL,
    last_price REAL NOT NULL,
    notional REAL NOT NULL,
    fee REAL NOT NULL,
    realized_pnl REAL NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE positions (
    symbol TEXT PRIMARY KEY,
    qty REAL NOT NULL,
    avg_cost REAL NOT NULL,
    realized_pnl REAL NOT NULL
);
CREATE TABLE account (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cash REAL NOT NULL,
    fees_paid REAL NOT NULL,
    orders INTEGER NOT NULL,
    fill_count INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    type TEXT NOT NULL,
    symbol TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""

# v2: retention prunes by time, and steps record preemptions (not attempts) separately.
_V2 = """
ALTER TABLE steps ADD COLUMN preemptions INTEGER NOT NULL DEFAULT 0;
CREATE INDEX journal_by_time ON journal (received_at);
CREATE INDEX runs_by_finish ON runs (finished_at);
"""

# v3: fewer, cheaper rows per run (docs/storage.md, "Cost").
# * Completed runs -- nearly all runs -- are stored one block per commit (`run_blocks`, a JSON
#   array of run records) instead of a row each; runs in flight, failed and cancelled keep a row
#   each (`run_rows`). The view `runs` reads both as the v2 table did.
# * A run's steps are stored in its record (one JSON array) instead of a row each; the view
#   `steps` reads them as the v2 table did. A step is [name, started_us, finished_us, state,
#   attempts, preemptions, error, output, output_stored], times in microseconds after the
#   run's created_at (integers encode faster than floats); a step completed at its first
#   attempt, unpreempted, without output, is only its first three fields.
# * Accepted events are stored one block per commit (`journal_blocks`); the view `journal`
#   reads them as the v2 table did.
# * The state index only holds runs in flight.
_V3 = """
ALTER TABLE runs RENAME TO run_rows;
ALTER TABLE run_rows ADD COLUMN steps TEXT;
UPDATE run_rows SET steps = (
    SELECT json_group_array(json_array(
        s.step,
        CAST(round((s.started_at - run_rows.created_at) * 1e6) AS INTEGER),
        CAST(round((s.finished_at - run_rows.created_at) * 1e6) AS INTEGER),
        s.state, s.attempts, s.preemptions, s.error,
        json(CAST(COALESCE(s.output, 'null') AS TEXT)), s.output IS NOT NULL))
    FROM steps s WHERE s.run_id = run_rows.id)
WHERE EXISTS (SELECT 1 FROM steps s WHERE s.run_id = run_rows.id);
DROP TABLE steps;
DROP INDEX runs_by_state;
DROP INDEX runs_by_finish;
CREATE INDEX run_rows_in_flight ON run_rows (state) WHERE state IN ('pending', 'running');
CREATE INDEX run_rows_by_finish ON run_rows (finished_at);
CREATE TABLE run_blocks (
    block INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    finished_at REAL NOT NULL,
    runs INTEGER NOT NULL,
    records TEXT NOT NULL
);
CREATE INDEX run_blocks_by_time ON run_blocks (finished_at);
CREATE VIEW runs (id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at,
                  finished_at, error, steps) AS
    SELECT id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at,
           finished_at, error, steps
    FROM run_rows
    UNION ALL
    SELECT r.value->>0, r.value->>1, r.value->>2, r.value->>3, r.value->>4, r.value->>5,
           CASE WHEN r.value->>6 IS NOT NULL THEN CAST(r.value->6 AS BLOB) END,
           r.value->>7, r.value->>8, r.value->>9, r.value->>10,
           r.value->11
    FROM run_blocks b, json_each(b.records) r;
CREATE VIEW steps (run_id, step, state, attempts, preemptions, started_at, finished_at, error,
                   output) AS
    SELECT r.id, s.value->>0, COALESCE(s.value->>3, 'completed'), COALESCE(s.value->>4, 1),
           COALESCE(s.value->>5, 0), r.created_at + s.value->>1 / 1e6,
           r.created_at + s.value->>2 / 1e6, s.value->>6,
           CASE WHEN json_array_length(s.value) = 3 THEN CAST('null' AS BLOB)
                WHEN s.value->>8 THEN CAST(s.value->7 AS BLOB) END
    FROM runs r, json_each(r.steps) s;
CREATE TABLE journal_blocks (
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    events TEXT NOT NULL
);
CREATE INDEX journal_blocks_by_time ON journal_blocks (last_at);
INSERT INTO journal_blocks (first_seq, last_seq, first_at, last_at, events)
    SELECT seq, seq, received_at, received_at,
           json_array(json_array(seq, received_at, type, symbol, json(CAST(payload AS TEXT))))
    FROM journal;
DROP TABLE journal;
DROP INDEX IF EXISTS journal_by_time;
CREATE VIEW journal (seq, received_at, type, symbol, payload) AS
    SELECT e.value->>0, e.value->>1, e.value->>2, e.value->>3, CAST(e.value->4 AS BLOB)
    FROM journal_blocks b, json_each(b.events) e
"""

# v4: what a commit writes for each run costs the event loop a third as much (docs/storage.md,
# "Cost"; an integer encodes several times faster than a float, and every value left out is
# one less to encode):
# * a symbol's state is one JSON record (`symbol_rows`), [phase, status, priority,
#   last_processed_us, last_error, last_tick], instead of a column each: the batch of changed
#   symbols is a JSON object keyed "id:name", so its upsert takes each record as it comes out
#   of `json_each` instead of parsing it again for every column (SQLite 3.40: ~1.5 us a symbol
#   instead of ~7, most of the writer's time). The view `symbols` reads it as the v3 table,
#   and updates and inserts through the view still work;
# * a completed run's record in its block is [id, workflow, symbol, priority, tick_ts,
#   created_us, finished_us, steps] (outcome and error follow only when not "completed" and
#   none): its state and its missing tick are the view's;
# * an accepted event's record is [seq, received_us, payload]: the payload names its type and
#   symbol ([seq, received_us, payload, type, symbol] for a payload stored as received).
# Times are integer microseconds since the epoch.
_V4 = """
CREATE TABLE symbol_rows (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    updated_at REAL NOT NULL
);
INSERT INTO symbol_rows (id, name, record, updated_at)
    SELECT id, name, json_array(phase, status, priority,
                                CAST(round(last_processed * 1e6) AS INTEGER), last_error,
                                json(CAST(last_tick AS TEXT))), updated_at
    FROM symbols;
DROP TABLE symbols;
CREATE VIEW symbols (id, name, phase, status, priority, last_processed, last_error, last_tick,
                     updated_at) AS
    SELECT id, name, record->>0, record->>1, record->>2, (record->>3) / 1e6, record->>4,
           CAST(record->>5 AS BLOB), updated_at
    FROM symbol_rows;
CREATE TRIGGER symbols_insert INSTEAD OF INSERT ON symbols BEGIN
    INSERT INTO symbol_rows (id, name, record, updated_at) VALUES (NEW.id, NEW.name, json_array(
        NEW.phase, NEW.status, NEW.priority, CAST(round(NEW.last_processed * 1e6) AS INTEGER),
        NEW.last_error, json(CAST(NEW.last_tick AS TEXT))), NEW.updated_at);
END;
CREATE TRIGGER symbols_update INSTEAD OF UPDATE ON symbols BEGIN
    UPDATE symbol_rows SET id = NEW.id, name = NEW.name, record = json_array(
        NEW.phase, NEW.status, NEW.priority, CAST(round(NEW.last_processed * 1e6) AS INTEGER),
        NEW.last_error, json(CAST(NEW.last_tick AS TEXT))), updated_at = NEW.updated_at
    WHERE id = OLD.id;
END;
CREATE TRIGGER symbols_delete INSTEAD OF DELETE ON symbols BEGIN
    DELETE FROM symbol_rows WHERE id = OLD.id;
END;
UPDATE run_blocks SET records = (
    SELECT json_group_array(json_array(
        r.value->>0, r.value->>1, r.value->>2, r.value->>5, r.value->>7,
        CAST(round((r.value->>8) * 1e6) AS INTEGER), CAST(round((r.value->>9) * 1e6) AS INTEGER),
        json(r.value->11), r.value->>4, r.value->>10))
    FROM json_each(run_blocks.records) r);
-- `steps` reads `runs` by name: it reads the new one.
DROP VIEW runs;
CREATE VIEW runs (id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at,
                  finished_at, error, steps) AS
    SELECT id, workflow, symbol, state, outcome, priority, tick, tick_ts, created_at,
           finished_at, error, steps
    FROM run_rows
    UNION ALL
    SELECT r.value->>0, r.value->>1, r.value->>2, 'completed', COALESCE(r.value->>8, 'completed'),
           r.value->>3, NULL, r.value->>4, (r.value->>5) / 1e6, (r.value->>6) / 1e6,
           r.value->>9, r.value->7
    FROM run_blocks b, json_each(b.records) r;
UPDATE journal_blocks SET events = (
    SELECT json_group_array(json_array(
        e.value->>0, CAST(round((e.value->>1) * 1e6) AS INTEGER), json(e.value->4),
        e.value->>2, e.value->>3))
    FROM json_each(journal_blocks.events) e);
DROP VIEW journal;
CREATE VIEW journal (seq, received_at, type, symbol, payload) AS
    SELECT e.value->>0, (e.value->>1) / 1e6, COALESCE(e.value->>3, e.value->2->>'type'),
           COALESCE(e.value->>4, e.value->2->>'symbol'), CAST(e.value->2 AS BLOB)
    FROM journal_blocks b, json_each(b.events) e
"""

# v5: a commit is one statement. The writer inserts one row into the view `commits`; its
# trigger writes the journal block, the changed symbols, the completed runs' block, the rows of
# runs in flight and the high-water marks, and SQLite runs it as its own transaction. The SQLite
# thread then needs the GIL twice per commit (to take the statement, to hand back the result)
# instead of around every statement of a dozen: each time, it waits for the event loop to
# let go of it, and the loop waits for it in turn (docs/storage.md, "Cost"). The view reads as
# empty: it is only written.
_V5 = """
CREATE VIEW commits (first_seq, last_seq, first_at, last_at, events, symbols, at, first_id,
                     last_id, finished_at, runs, records, unrow, run_rows, max_run_id, max_seq)
    AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
              NULL, NULL, NULL
    WHERE 0;
CREATE TRIGGER commits_insert INSTEAD OF INSERT ON commits BEGIN
    INSERT INTO journal_blocks (first_seq, last_seq, first_at, last_at, events)
        SELECT NEW.first_seq, NEW.last_seq, NEW.first_at, NEW.last_at, NEW.events
        WHERE NEW.events IS NOT NULL;
    -- The batch is a JSON object keyed "id:name" (the id's digits end at the first colon):
    -- each record goes in as the text json_each hands out, never parsed column by column.
    INSERT INTO symbol_rows (id, name, record, updated_at)
        SELECT CAST(key AS INTEGER), substr(key, instr(key, ':') + 1), value, NEW.at
        FROM json_each(NEW.symbols) WHERE true
        ON CONFLICT (id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at;
    INSERT INTO run_blocks (first_id, last_id, finished_at, runs, records)
        SELECT NEW.first_id, NEW.last_id, NEW.finished_at, NEW.runs, NEW.records
        WHERE NEW.records IS NOT NULL;
    DELETE FROM run_rows WHERE id IN (SELECT value FROM json_each(NEW.unrow));
    -- One JSON array per run (engine/core/records.py, run_record); its tick and steps are
    -- stored as the JSON text they are. A tick_ts of null is a non-finite ts, which msgspec
    -- writes as null: intake admits only finite ts >= 0, so only a source built in Python
    -- can hand one over; it is stored as +inf rather than fail the commit.
    INSERT INTO run_rows (id, workflow, symbol, state, outcome, priority, tick, tick_ts,
                          created_at, finished_at, error, steps)
        SELECT r.value->>0, r.value->>1, r.value->>2, r.value->>3, r.value->>4, r.value->>5,
               CAST(r.value->6 AS BLOB), IFNULL(r.value->>7, 9e999), r.value->>8, r.value->>9,
               r.value->>10, r.value->11
        FROM json_each(NEW.run_rows) r WHERE true
        ON CONFLICT (id) DO UPDATE SET state = excluded.state, outcome = excluded.outcome,
            priority = excluded.priority, tick = excluded.tick, tick_ts = excluded.tick_ts,
            finished_at = excluded.finished_at, error = excluded.error, steps = excluded.steps;
    INSERT INTO meta (key, value)
        SELECT 'max_run_id', NEW.max_run_id WHERE NEW.max_run_id IS NOT NULL
        ON CONFLICT (key) DO UPDATE
        SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER));
    INSERT INTO meta (key, value)
        SELECT 'max_seq', NEW.max_seq WHERE NEW.max_seq IS NOT NULL
        ON CONFLICT (key) DO UPDATE
        SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER));
END
"""

# v6: a step stored in full (retried, preempted, failed, in flight or with an output) also
# says when it was last queued ready to run: `ready_us`, appended to its record
# (engine/core/layout.py, StepRecord), read by the view `steps` as `ready_at`. Records stored
# before have no such field: the view reads null. From this version on, the views that read
# run and step records are generated from the records' declarations (engine/storage/views.py);
# `steps` reads `runs` by name, so both are made again.
_V6 = f"""
DROP VIEW steps;
DROP VIEW runs;
{RUNS_VIEW};
{STEPS_VIEW}
"""

MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6}

# WAL lets `tickflow status` read while the daemon writes. synchronous=NORMAL in WAL mode makes
# every commit durable against a process crash (kill -9) -- the WAL frames are in the OS before
# COMMIT returns -- and only a power loss can drop the last commits; `full` is configurable.
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON")
