"""Simulated observations with known truth: what a night needs, written as the camera would."""
