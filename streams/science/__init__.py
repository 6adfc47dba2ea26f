"""The built-in Alert Production: instrument signature removal, difference imaging, detection.

Array functions on numpy and astropy, with scipy and photutils where they do the job; written
by hand only where no library does (the PSF-matching kernel, the fast WCS resampling).
Images are in electrons; times in seconds; positions in pixels (0-based, numpy order y, x).
"""
