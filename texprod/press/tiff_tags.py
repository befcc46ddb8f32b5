"""TIFF tag and value codes that texprod writes (printfile) and checks (preflight): one list."""

TAG_DESCRIPTION = 270
TAG_SUBIFDS = 330
TAG_INKSET = 332
TAG_EXTRASAMPLES = 338
TAG_ICC = 34675
TAG_PHOTOSHOP_LAYERS = 37724  # ImageSourceData: Photoshop layer data ("hidden layers")

PHOTOMETRIC_RGB = 2
PHOTOMETRIC_SEPARATED = 5
INKSET_CMYK = 1

COMPRESSION_CODES = {"lzw": 5, "deflate": 8, "none": 1}  # written; 8 = Adobe deflate, as libvips
COMPRESSION_NAMES = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate"}  # read
