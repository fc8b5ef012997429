"""The hardware a run is on: device profiles and detection, emulation of a smaller device, calibration of its ceilings, Jetson power modes."""
