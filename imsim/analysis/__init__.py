"""Analysis over a whole stored collection, in this process, in bounded memory: every image's nearest neighbours
(:mod:`~imsim.analysis.neighbours`, what `imsim duplicates` links) and topics by clustering
(:mod:`~imsim.analysis.clusters`, `imsim clusters`). Both read the collection once, streamed, and hand the work to
FAISS (exact below a few tens of thousands of rows, an inverted-file index above)."""
