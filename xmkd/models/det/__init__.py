"""3D detection parts shared by the SECOND teacher and the monocular student (HSRDN / CMKD)."""
