"""Config checks: typed fields of the lab's config nodes (``schema``)."""
