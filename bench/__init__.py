"""`orders bench`: the stages that measure the service against same-run baselines, and their plots.
Not part of the shipped packages: run it from a source checkout."""
