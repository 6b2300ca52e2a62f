"""Where images come from, before a pixel is decoded: names (ids, globs, what a store can hold), the file records,
finding images (folders, globs, path lists, ``s3://`` prefixes), reading one file or object safely within the limits,
and the fetch stage that opens, checks and reads each item for the embedding step.

- :mod:`~imsim.sources.names`, :mod:`~imsim.sources.files`: names and file records (no I/O);
- :mod:`~imsim.sources.paths`: discovery, streamed;
- :mod:`~imsim.sources.reading`: one local file (the allowed roots checked on the file actually opened);
- :mod:`~imsim.sources.s3`: ``s3://`` objects (the only module that imports boto3);
- :mod:`~imsim.sources.fetch`: the fetch stage: the caller's skip rule asked before and after reading, objects
  fetched on an I/O pool.
"""
