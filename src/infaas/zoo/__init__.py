"""Ready model families for demos, tests and benchmarks."""

from infaas.zoo.digits import ZooModel

FAMILIES = ("digits", "digits-heavy", "efficientnet-lite", "text")


def build_family(name: str) -> list[ZooModel]:
    """Build a zoo family's models (training or exporting them locally; nothing is downloaded)."""
    if name == "digits":
        from infaas.zoo import digits

        return digits.build()
    if name == "digits-heavy":  # one slow model for the digits task: load a small machine (autoscaling demos)
        from infaas.zoo import digits

        return [digits.heavy(program=True)]
    if name == "efficientnet-lite":
        from infaas.zoo import efficientnet

        return efficientnet.build()
    if name == "text":  # sentence encoders (INT64 inputs, dynamic sequence axis; cosine fidelity)
        from infaas.zoo import text

        return text.build()
    raise ValueError(f"unknown zoo family {name!r}; known: {', '.join(FAMILIES)}")


__all__ = ["FAMILIES", "ZooModel", "build_family"]
