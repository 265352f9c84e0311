"""The one row shape every photo source gives: Spark's ``binaryFile`` schema.

The file source, the Blob source, Auto Loader and the tests' memory source all produce
(path, modificationTime, length, content), so nothing downstream knows where a photo came from.
Spark's file source needs it spelled out for a stream.
"""

BINARY_FILE_SCHEMA = "path string, modificationTime timestamp, length long, content binary"
