"""A stand-in for prefect-docker's deployment steps, for tests that deploy without a Docker engine.

Put `tests/docker_steps_stand_in` on PYTHONPATH of a `prefect deploy`: the CUDA deployments' `build`
and `push` steps (deployments/prefect.yaml) then run these functions, which check their inputs as
prefect-docker does, build and push nothing, and append each call to the JSON-lines file named by
DOCKER_STEPS_STAND_IN_LOG (when set), so a test can assert what would have been built and pushed.
"""
