"""Platform implementations besides v2 (which lives in `transferd.mirror.platform`): Gencove's legacy REST APIs."""
