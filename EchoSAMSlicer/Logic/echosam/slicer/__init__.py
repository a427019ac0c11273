"""The Slicer panel's Qt-free side, tested headless on real MRML nodes (slicer-core) and a real
worker thread. ``EchoSAMSlicer.py`` only binds widgets to what is here.

- `controller`: `Controller`, the runs the panel submits and how results reach MRML;
- `scene_result`: the result as the scene holds it (spacing, cardiac summary, LV curve, frame line);
- `runs`: `Run`, `Action`, `RunTracker` (worker messages -> what the panel shows);
- `jobs`: worker jobs of the panel (the session synchronised with the scene's prompts);
- `prompts`: the scene's prompt dict (points, boxes, corrections, locks): the one source;
- `edits`: fingerprints of what EchoSAM wrote, and every frame the user changed since;
- `undo`: EchoSAM's undo stack, saved on the input sequence;
- `calibration`: uncalibrated pixel spacing, and calibrating it;
- `chooser`: model chooser facts and "use a file I already have";
- `display`: results rows, the frame line, device list, button states;
- `install`: dependency plan and the background installer (an injected process runner);
- `devices`: the compute device choice.

Submodules are imported by name (``from echosam.slicer import controller``): importing this package
imports neither MRML nor torch.
"""
