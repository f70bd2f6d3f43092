"""Reading an Elasticsearch index: connection, errors, PIT paging, slices in workers."""

#: The optional HTTP stacks elastic_transport imports when installed; a slice worker's
#: client uses urllib3, and importing these costs each worker memory for nothing.
UNUSED_HTTP_STACKS = ("aiohttp", "requests")
