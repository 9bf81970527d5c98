"""The fleet: many GPU boxes from one terminal, on Ray (an optional extra: ``llmos-tui[fleet]``)."""
