"""Dataset audits (per-class attention, shortcut discovery, faithfulness, drift): the next
room to build, on engine / maps / store; only its pipeline module will import Beam."""
