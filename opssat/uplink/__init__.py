"""Stage 5, what goes up to the spacecraft: the SmartCam package (``package``), SmartCam's
config.ini read and checked as its app reads it (``smartcam_config``), and the flight
rehearsal that runs a user's own smartcam.py with the packages (``rehearsal``, its runner
``rehearsal_runner`` and the reading of its outputs ``rehearsal_outputs``).

May import: every other stage.
"""
