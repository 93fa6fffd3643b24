//! A probe-rs probe driver (SW-DP + AHB-AP) for the virtual board, opened by selector like a real probe
