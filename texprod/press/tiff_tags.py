"""TIFF tag and value codes that texprod writes (printfile) and checks (preflight): one list."""

TAG_DESCRIPTION = 270
TAG_SUBIFDS = 330
TAG_INKSET = 332
TAG_INK_NAMES = 333
TAG_NUMBER_OF_INKS = 334
TAG_EXTRASAMPLES = 338
TAG_ICC = 34675
TAG_PHOTOSHOP_LAYERS = 37724  # ImageSourceData: Photoshop layer data ("hidden layers")

PHOTOMETRIC_RGB = 2
PHOTOMETRIC_SEPARATED = 5
INKSET_CMYK = 1
INKSET_MULTI = 2  # not CMYK only: the inks are named (InkNames)
PROCESS_INKS = ("Cyan", "Magenta", "Yellow", "Black")  # InkNames of CMYK, in order
EXTRASAMPLE_UNSPECIFIED = 0  # an extra channel that is data (a spot ink), not alpha

COMPRESSION_CODES = {"lzw": 5, "deflate": 8, "none": 1}  # written; 8 = Adobe deflate, as libvips
COMPRESSION_NAMES = {1: "none", 5: "lzw", 8: "deflate", 32946: "deflate"}  # read
