"""One module per benchmark: parse official annotation files into ``VideoRecord`` lists."""

from actionlab.data.datasets.base import Annotations, VideoRecord

__all__ = ["Annotations", "VideoRecord"]
