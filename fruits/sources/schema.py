"""The one row shape every photo source gives: Spark's ``binaryFile`` schema.

The project's landing source, Spark's ``binaryFile`` (training folders), Auto Loader and the
tests' memory source all produce (path, modificationTime, length, content), so nothing downstream
knows where a photo came from. Auto Loader needs it spelled out for a stream.
"""

BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"

# The project's own landing source (``fruits_uploads``) adds why a listed file's content was
# not read (``too_large_bytes`` by its listed size, ``unreadable`` and the error), so that no
# single file can fail a micro-batch; the step quarantines such a row with that reason.
UPLOAD_SCHEMA = f"{BINARY_FILE_SCHEMA}, unread_reason string, unread_detail string"
