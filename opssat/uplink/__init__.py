"""Stage 5, what goes up to the spacecraft: the SmartCam package (``package``).

May import: every other stage.
"""
