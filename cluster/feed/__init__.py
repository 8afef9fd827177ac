"""The change feed and the admin view (``cluster/proto/feed.proto``; contract in
``cluster/FEED.md``): a collection's inserts, upserts and deletes read straight from the WAL in
timestamp order with resume tokens, and the cluster's nodes, channels, segments and WAL figures.
Served by every proxy and by ``canopy standalone`` on the Milvus API port."""

from cluster.feed.merge import FeedTruncated
from cluster.feed.service import AdminServicer, ChangeFeedServicer, feed_services
from cluster.feed.tokens import ResumeToken, TokenError
from cluster.feed.watch import FeedLimits

__all__ = [
    "AdminServicer",
    "ChangeFeedServicer",
    "FeedLimits",
    "FeedTruncated",
    "ResumeToken",
    "TokenError",
    "feed_services",
]
