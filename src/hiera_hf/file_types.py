"""Which files hiera-hf reads, by name: the one list of each kind. No imports, so that the command line can name
them in its help without loading anything."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")  # single images
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the frames of a video given as a folder (as Meta's video loader)

__all__ = ["FRAME_EXTENSIONS", "IMAGE_EXTENSIONS"]
