"""Storage: SQLite state (WAL) behind one group-commit writer, and recovery at start."""

from .db import default_db_path, open_database
from .recovery import RecoveryReport
from .schema import SCHEMA_VERSION
from .status import StatusReport, format_report, read_status
from .writer import StorageWriter, WriterStatistics

__all__ = [
    "SCHEMA_VERSION",
    "RecoveryReport",
    "StatusReport",
    "StorageWriter",
    "WriterStatistics",
    "default_db_path",
    "format_report",
    "open_database",
    "read_status",
]
