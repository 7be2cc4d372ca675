"""Devices and the extent store on them.

tiers/ knows directories, files, latency and bytes; it never imports shadowfs (the daemon) and
knows nothing about inodes beyond the numbers that name an extent.
"""
