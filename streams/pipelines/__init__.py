"""Pipelines: what runs on one detector of one visit, in a worker's pipeline processes.

A pipeline has two steps: `preload` (when the detector's start command arrives, overlapping the
exposure) and `run` (raws in, outcome out). They run in a process of their own, chosen by
detector, so a detector's preload and run share that process's caches.
"""
