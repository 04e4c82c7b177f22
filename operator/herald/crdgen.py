"""Generates Herald's CustomResourceDefinitions (ScheduledPost, Publication, SocialAccount,
ClusterSocialAccount) from the pydantic models.

`python -m herald.crdgen > crds/scheduledposts.herald.dev.yaml` rewrites the committed
CRD; a test fails when the committed file differs from what this module produces.

pydantic emits JSON Schema (with `$ref`, `anyOf: [X, null]`, titles); Kubernetes wants a
*structural* OpenAPI v3 schema (everything inlined, a `type` on every node, no nulls).
`structural()` does that translation and nothing else: every constraint comes from
`herald.models`.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from pydantic import BaseModel

from herald import models

_DROP = {"title"}
_API_VERSION_DOC = f"APIVersion of this object: {models.API_VERSION}."

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Publish At", "type": "string", "jsonPath": ".spec.publishAt"},
    {"name": "Attempts", "type": "integer", "jsonPath": ".status.attempt"},
    {"name": "Target", "type": "string", "jsonPath": ".spec.target", "priority": 1},
    {"name": "Next Attempt", "type": "string", "jsonPath": ".status.nextAttemptAt", "priority": 1},
    {"name": "URL", "type": "string", "jsonPath": ".status.externalUrl", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _deref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _deref(merged, defs)
    return node


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON-schema node into a structural OpenAPI v3 node."""
    node = _deref(node, defs)
    if "anyOf" in node:
        # Optional[X] is anyOf [X, null]: Kubernetes expresses optionality by absence
        # from `required`, never by a null type.
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express union {node['anyOf']!r} structurally")
        outer = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**_deref(branches[0], defs), **outer}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "additionalProperties" and value is False:
            # Structural schemas forbid additionalProperties beside properties; unknown
            # fields are instead rejected by kubectl's strict field validation and pruned
            # by the API server.
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = structural(value, defs)
        else:
            out[key] = value
    if out.get("format") == "date-time":
        out["type"] = "string"
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node!r}")
    # type and description first: the order people read them in.
    return {key: out[key] for key in sorted(out, key=_key_order)}


def _key_order(key: str) -> tuple[int, str]:
    order = ["type", "description", "format", "default"]
    return (order.index(key), "") if key in order else (len(order), key)


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return structural(raw, defs)


def _crd(
    kind: str,
    plural: str,
    singular: str,
    names: dict[str, Any],
    version: dict[str, Any],
    description: str,
    properties: dict[str, Any],
    scope: str = "Namespaced",
) -> dict[str, Any]:
    """A CRD of Herald's group with one served and stored version: `names` and `version`
    add to the common fields, `properties` to apiVersion/kind/metadata."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{models.GROUP}",
            "labels": {"app.kubernetes.io/name": "herald", "app.kubernetes.io/part-of": "herald"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                **names,
                "categories": ["herald"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    **version,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": _API_VERSION_DOC,
                                },
                                "kind": {
                                    "type": "string",
                                    "description": f"Kind of this object: {kind}.",
                                },
                                "metadata": {"type": "object"},
                                **properties,
                            },
                        }
                    },
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    return _crd(
        models.KIND,
        models.PLURAL,
        models.SINGULAR,
        {"shortNames": ["sp"]},
        {
            "subresources": {"status": {}},
            "additionalPrinterColumns": PRINTER_COLUMNS,
            "selectableFields": [
                {"jsonPath": ".status.phase"},
                {"jsonPath": ".spec.channel"},
                {"jsonPath": ".spec.target"},
            ],
        },
        "A social-media post that Herald publishes through n8n at spec.publishAt. Herald "
        "retries transient failures, recovers attempts that never got n8n's callback, and "
        "reports progress in .status.",
        {
            "spec": _schema(models.ScheduledPostSpec),
            # Defaulted, so a post nobody has written yet reads as Pending (kubectl get,
            # field selectors) without an accept write per post.
            "status": {**_schema(models.ScheduledPostStatus), "default": {}},
        },
    )


PUBLICATION_COLUMNS: list[dict[str, Any]] = [
    {"name": "Post", "type": "string", "jsonPath": ".spec.post"},
    {"name": "State", "type": "string", "jsonPath": ".spec.state"},
    {"name": "Published At", "type": "string", "jsonPath": ".spec.publishedAt"},
    {"name": "URL", "type": "string", "jsonPath": ".spec.externalUrl", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def publication_crd() -> dict[str, Any]:
    """The ledger's CRD: one object per publication fingerprint, spec only (no status
    subresource: Herald alone writes it, and a whole-object PUT with resourceVersion is
    its compare-and-swap)."""
    return _crd(
        models.PUBLICATION_KIND,
        models.PUBLICATION_PLURAL,
        models.PUBLICATION_SINGULAR,
        {},
        {
            "additionalPrinterColumns": PUBLICATION_COLUMNS,
            # A callback for a deleted post finds its record by holder (the sidecar cannot
            # rebuild the fingerprint without the post).
            "selectableFields": [{"jsonPath": ".spec.holderUid"}, {"jsonPath": ".spec.state"}],
        },
        "Herald's record that a ScheduledPost was (or is being) published, kept after the "
        "post is deleted so that the same post applied again is not published twice. Named "
        "pub-<SHA-256 of the fingerprint>; written by Herald only, read by name, never "
        "watched; deleted by Herald only once older than publicationRetentionDays. "
        + models.FINGERPRINT_DOC,
        {"spec": _schema(models.PublicationSpec)},
    )


def _account_columns(cluster: bool) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = [
        {"name": "Channel", "type": "string", "jsonPath": ".spec.channel"},
        {"name": "Handle", "type": "string", "jsonPath": ".spec.handle"},
        {"name": "Target", "type": "string", "jsonPath": ".spec.target", "priority": 1},
    ]
    if cluster:
        columns.append(
            {"name": "Namespaces", "type": "string", "jsonPath": ".spec.allowedNamespaces.from"}
        )
    else:
        columns.append({"name": "Default", "type": "boolean", "jsonPath": ".spec.default"})
    return [
        *columns,
        {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def account_crd(cluster: bool = False) -> dict[str, Any]:
    """SocialAccount (namespaced: usable by the posts of its namespace) or
    ClusterSocialAccount (cluster-scoped: usable by the namespaces it admits), like
    cert-manager's Issuer and ClusterIssuer."""
    if cluster:
        kind, plural, singular = (
            models.CLUSTER_ACCOUNT_KIND,
            models.CLUSTER_ACCOUNT_PLURAL,
            models.CLUSTER_ACCOUNT_SINGULAR,
        )
        spec: type[BaseModel] = models.ClusterSocialAccountSpec
        short = ["csacct"]
        description = (
            "A social-network identity (spec.handle) that ScheduledPosts in the namespaces "
            "spec.allowedNamespaces admits may publish as, by naming it in spec.account "
            "(a SocialAccount of the same name in the post's namespace comes first). "
            "Managed by cluster administrators."
        )
    else:
        kind, plural, singular = (
            models.ACCOUNT_KIND,
            models.ACCOUNT_PLURAL,
            models.ACCOUNT_SINGULAR,
        )
        spec = models.NamespacedAccountSpec
        short = ["sacct"]
        description = (
            "A social-network identity (spec.handle) that ScheduledPosts in this namespace "
            "may publish as, by naming it in spec.account (or without one, when it is the "
            "namespace's default for its channel). Posts in other namespaces cannot use it."
        )
    return _crd(
        kind,
        plural,
        singular,
        {"shortNames": short},
        {"subresources": {"status": {}}, "additionalPrinterColumns": _account_columns(cluster)},
        description,
        {"spec": _schema(spec), "status": _schema(models.SocialAccountStatus)},
        scope="Cluster" if cluster else "Namespaced",
    )


def render(which: str = "scheduledposts") -> str:
    header = (
        "# Generated by `python -m herald.crdgen` from operator/herald/models.py.\n"
        "# Do not edit by hand: change the models and regenerate (tests check it).\n"
    )
    if which == models.PUBLICATION_PLURAL:
        doc = publication_crd()
    elif which in (models.ACCOUNT_PLURAL, models.CLUSTER_ACCOUNT_PLURAL):
        doc = account_crd(cluster=which == models.CLUSTER_ACCOUNT_PLURAL)
    else:
        doc = crd()
    return header + yaml.safe_dump(doc, sort_keys=False, width=100)


def main() -> None:
    """`python -m herald.crdgen [scheduledposts|publications|socialaccounts|
    clustersocialaccounts]`."""
    sys.stdout.write(render(*sys.argv[1:2]))


if __name__ == "__main__":
    main()
