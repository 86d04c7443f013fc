"""headcap.core: the basement every stage may use (atomic file I/O, the C++ kernel builder,
point-set alignment, output-folder locks). It imports nothing else of headcap's."""
