"""The benchmark harness: fio data-path runs against native, shadowfs and reference mounts."""
