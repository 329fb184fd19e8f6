"""Veil Serve: the model deployments on Ray Serve and their clients.

* :mod:`serving.config`: the serving configuration file (validated; see ``config.yaml``);
* :mod:`serving.engines`: the plain engines and their batched calls (no Ray);
* :mod:`serving.deployments`: ``build_app`` / ``deploy`` (imports Ray);
* :mod:`serving.client`: serve-backed engines and ``resolve_engines`` (Serve when its
  app runs on the connected Ray cluster, in-process ONNX otherwise);
* :mod:`serving.netns`: a loopback-only network namespace for local clusters;
* :mod:`serving.cli`: ``veil serve --config FILE``.

Importing this package imports nothing heavy.
"""
