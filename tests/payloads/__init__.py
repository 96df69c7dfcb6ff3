"""Small programs the launcher tests run as ranks (real processes, no MindSpore unless named so)."""
