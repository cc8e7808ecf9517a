"""caikit: Constitutional AI (Bai et al. 2022) as composable command-line stages."""

__version__ = "0.1.0"
