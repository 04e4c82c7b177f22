"""The ScheduledPost resource as pydantic models: the one source of the CRD's schema.

`herald.crdgen` turns these models into `crds/scheduledposts.herald.dev.yaml`, so the
schema the API server enforces and the types the operator reads cannot drift apart.
Descriptions here are what `kubectl explain` prints; constraints here are what the API
server rejects. Cross-field rules that pydantic expresses as validators are carried to
the CRD as CEL rules through `x-kubernetes-validations` in `json_schema_extra`.

`CHANNEL_LIMITS` is the one table of what each network accepts (text length, media
count, required media); it becomes CEL rules keyed on `spec.channel`, so `kubectl apply`
refuses a post its network would refuse. `channel_violations()` applies the same table in
Python. It is not a validator: a post stored before a limit existed must stay readable.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    model_validator,
)

GROUP = "herald.dev"
VERSION = "v1alpha1"
KIND = "ScheduledPost"
PLURAL = "scheduledposts"
SINGULAR = "scheduledpost"
API_VERSION = f"{GROUP}/{VERSION}"

RETRY_ANNOTATION = "herald.dev/retry-requested-at"
"""Set to a new value (e.g. `date -u +%FT%TZ`) to retry a Failed post from attempt 1."""

HISTORY_LIMIT = 10
RFC3339_WITH_OFFSET = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)


def _require_offset(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("publishAt needs a UTC offset, e.g. 2026-12-01T09:00:00Z")
    return value.astimezone(dt.UTC)


def format_time(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a `Z`, milliseconds only when there are any."""
    value = value.astimezone(dt.UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


_SERIALIZE = PlainSerializer(format_time, return_type=str, when_used="json")
AwareDatetime = Annotated[dt.datetime, AfterValidator(_require_offset), _SERIALIZE]
Time = Annotated[dt.datetime, AfterValidator(_utc), _SERIALIZE]


class _Model(BaseModel):
    # extra="forbid" mirrors the structural schema: the API server prunes or rejects
    # unknown fields, so the models must not silently accept them either.
    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True)


class Channel(enum.StrEnum):
    """Where n8n publishes the post. n8n's workflow routes on this value."""

    LINKEDIN = "linkedin"
    X = "x"
    MASTODON = "mastodon"
    BLUESKY = "bluesky"
    FACEBOOK = "facebook"
    INSTAGRAM = "instagram"
    THREADS = "threads"


class Phase(enum.StrEnum):
    """Where the post is in its lifecycle."""

    PENDING = "Pending"
    """Nothing written yet: the API server's default for a new post's status. The
    operator reads a Pending post as Scheduled at spec.publishAt and writes its status
    first when it claims it (or when it must say more: suspended, retry asked for)."""
    SCHEDULED = "Scheduled"
    PUBLISHING = "Publishing"
    RETRYING = "Retrying"
    PUBLISHED = "Published"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class ErrorClass(enum.StrEnum):
    """How a failure is treated: transient failures are retried, the others are final."""

    TRANSIENT = "Transient"
    PERMANENT = "Permanent"
    STALE = "Stale"
    DEADLINE = "Deadline"


@dataclass(frozen=True)
class ChannelLimits:
    """What one network accepts, as far as the API server can check it at `kubectl apply`."""

    network: str
    """The network's name, for messages."""
    text: int
    """Most characters in content.text, counted in Unicode code points (CEL's size())."""
    media: int
    """Most media items."""
    needs_media: bool = False
    """The network publishes nothing without an image or video."""
    single_media_with_link: bool = False
    """With content.link, at most one media item (the network drops the others)."""


CHANNEL_LIMITS: dict[Channel, ChannelLimits] = {
    # Posts API commentary; MultiImage posts take 2 to 20 images. A post with a link is an
    # article with one thumbnail: several images and a link cannot go together.
    Channel.LINKEDIN: ChannelLimits("LinkedIn", 3000, 20, single_media_with_link=True),
    # X counts a weighted length (URLs 23, most CJK characters and emoji 2): a text within
    # 280 code points can still be too long for X, which then refuses it.
    Channel.X: ChannelLimits("X", 280, 4),
    # Per-server settings (max_characters, max_media_attachments); these are the defaults.
    Channel.MASTODON: ChannelLimits("Mastodon", 500, 4),
    # 300 graphemes; a code point count is never below the grapheme count, so this check
    # refuses nothing Bluesky accepts when each character is one code point, and may refuse
    # a text with many multi-code-point graphemes (emoji sequences, flags, combining marks).
    Channel.BLUESKY: ChannelLimits("Bluesky", 300, 4),
    # No documented maximum of photos in one Page post: Herald takes 20, as for LinkedIn.
    Channel.FACEBOOK: ChannelLimits("Facebook", 63206, 20),
    # Carousels take up to 10 images or videos; a post needs at least one.
    Channel.INSTAGRAM: ChannelLimits("Instagram", 2200, 10, needs_media=True),
    # Carousels take up to 20 images or videos.
    Channel.THREADS: ChannelLimits("Threads", 500, 20),
}
# The schema's own bounds sit above every channel's limit, so that the channel's CEL rule,
# whose message names the channel, is what refuses a post one past its limit (the API
# server skips the CEL rules of an object that already breaks its schema).
TEXT_MAX = 65536
"""Bound on content.text for any channel (the longest limit, Facebook's, is 63,206)."""
MEDIA_MAX = 32
"""Bound on content.media for any channel (the largest limit is 20)."""


class Media(_Model):
    """An image or video attached to the post."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^https?://",
        description="Public http(s) URL of the media file; n8n downloads it when it publishes.",
    )
    alt_text: str | None = Field(
        default=None,
        alias="altText",
        max_length=1500,
        description="Alternative text for screen readers.",
    )


class Content(_Model):
    """What is published."""

    text: str = Field(
        min_length=1,
        max_length=TEXT_MAX,
        description="The post's text, at least 1 and at most the channel's limit of "
        "characters: linkedin 3000, x 280, mastodon 500 (the default of a Mastodon server; "
        "the workflow's MASTODON_MAX_CHARACTERS follows your server), bluesky 300, "
        "facebook 63206, instagram 2200, threads 500. Characters are counted as Unicode "
        "code points, as CEL does: an emoji made of several code points counts several "
        "times, and X and Threads count some characters more than once, so a text within the "
        "limit here can still be refused by the network.",
    )
    link: str | None = Field(
        default=None,
        max_length=2048,
        pattern=r"^https?://",
        description="An http(s) URL to attach as a link preview.",
    )
    media: list[Media] | None = Field(
        default=None,
        max_length=MEDIA_MAX,
        description="Images or videos, in display order, at most the channel's limit: "
        "linkedin 20 (and at most 1 with a link), x 4, mastodon 4 (server default), "
        "bluesky 4, facebook 20 (Herald's cap: Facebook documents none), instagram 10 "
        "(at least 1 required), threads 20.",
    )


class RetryPolicy(_Model):
    """How transient failures are retried. Unset fields take the operator's defaults."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.backoffSeconds) || !has(self.maxBackoffSeconds)"
                    " || self.maxBackoffSeconds >= self.backoffSeconds",
                    "message": "maxBackoffSeconds must be greater than or equal to backoffSeconds",
                    "fieldPath": ".maxBackoffSeconds",
                    "reason": "FieldValueInvalid",
                }
            ]
        },
    )

    max_attempts: int | None = Field(
        default=None,
        alias="maxAttempts",
        ge=1,
        le=100,
        description="Attempts in all, the first one included (operator default: 5).",
    )
    backoff_seconds: int | None = Field(
        default=None,
        alias="backoffSeconds",
        ge=0,
        le=86400,
        description="Delay before the second attempt; it doubles for each attempt after that "
        "(operator default: 60).",
    )
    max_backoff_seconds: int | None = Field(
        default=None,
        alias="maxBackoffSeconds",
        ge=0,
        le=604800,
        description="Upper bound of the backoff between two attempts, also the cap on an "
        "honoured Retry-After from n8n itself (operator default: 3600). A network's rate-limit "
        "reset that n8n reports (the callback's error.retryAfterSeconds) is waited for in "
        "full, up to 7 days.",
    )

    @model_validator(mode="after")
    def _max_at_least_base(self) -> RetryPolicy:
        if (
            self.backoff_seconds is not None
            and self.max_backoff_seconds is not None
            and self.max_backoff_seconds < self.backoff_seconds
        ):
            raise ValueError("maxBackoffSeconds must be greater than or equal to backoffSeconds")
        return self


@dataclass(frozen=True)
class ChannelRule:
    """One limit of CHANNEL_LIMITS: a CEL rule on the spec, and the same test in Python."""

    channel: Channel
    rule: str
    message: str
    field_path: str
    broken: Callable[[Content], bool] = field(compare=False)
    """The Python twin of `rule`: True when the content breaks it."""
    reason: str = "FieldValueInvalid"

    def cel(self) -> dict[str, JsonValue]:
        return {
            "rule": self.rule,
            "message": self.message,
            "fieldPath": self.field_path,
            "reason": self.reason,
        }


def _media(content: Content) -> int:
    return len(content.media or [])


def _rules_of(channel: Channel, limits: ChannelLimits) -> list[ChannelRule]:
    other = f"self.channel != '{channel.value}'"
    name = f"channel {channel.value} ({limits.network})"
    rules = [
        ChannelRule(
            channel,
            f"{other} || size(self.content.text) <= {limits.text}",
            f"{name}: content.text is limited to {limits.text} characters (Unicode code points)",
            ".content.text",
            lambda c: len(c.text) > limits.text,
        ),
        ChannelRule(
            channel,
            f"{other} || !has(self.content.media) || size(self.content.media) <= {limits.media}",
            f"{name}: content.media is limited to {limits.media} items",
            ".content.media",
            lambda c: _media(c) > limits.media,
        ),
    ]
    if limits.needs_media:
        rules.append(
            ChannelRule(
                channel,
                f"{other} || (has(self.content.media) && size(self.content.media) > 0)",
                f"{name}: content.media needs at least 1 image or video "
                f"({limits.network} does not publish text alone)",
                ".content.media",
                lambda c: _media(c) == 0,
                "FieldValueRequired",
            )
        )
    if limits.single_media_with_link:
        rules.append(
            ChannelRule(
                channel,
                f"{other} || !has(self.content.link) || !has(self.content.media) "
                "|| size(self.content.media) <= 1",
                f"{name}: a post with content.link takes at most 1 media item "
                f"({limits.network} shows a link with one image and would drop the others): "
                "remove the link or keep one image",
                ".content.media",
                lambda c: c.link is not None and _media(c) > 1,
            )
        )
    return rules


def channel_rules() -> list[ChannelRule]:
    """The CEL rules keyed on spec.channel. Each costs a constant (size() of a string or a
    list is O(1) in CEL), so they fit the API server's cost budget whatever the lengths."""
    return [rule for ch, limits in CHANNEL_LIMITS.items() for rule in _rules_of(ch, limits)]


def _cel_rules() -> list[JsonValue]:
    return [rule.cel() for rule in channel_rules()]


def channel_violations(spec: ScheduledPostSpec) -> list[ChannelRule]:
    """The rules of channel_rules() this spec breaks: what the API server refuses it for.

    Not a model validator: the operator must still read a post stored before a limit
    existed (the API server checks the rules when a spec is created or changed, not when
    it is read); the network's own answer then fails such a post with a message."""
    return [r for r in channel_rules() if r.channel is spec.channel and r.broken(spec.content)]


class ScheduledPostSpec(_Model):
    """What to publish, where, and when."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _cel_rules()})

    publish_at: AwareDatetime = Field(
        alias="publishAt",
        json_schema_extra={"pattern": RFC3339_WITH_OFFSET},
        description="When to publish, RFC 3339 with a UTC offset, e.g. 2026-12-01T09:00:00Z "
        "or 2026-12-01T10:00:00+01:00. A time in the past publishes at once, unless it is "
        "further past than the starting deadline (see startingDeadlineSeconds).",
    )
    channel: Channel = Field(
        default=Channel.LINKEDIN,
        description="The social network n8n publishes to.",
    )
    account: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Name of the account to publish as: a SocialAccount in the post's "
        "namespace, else a ClusterSocialAccount whose allowedNamespaces admits the namespace. "
        "Unset: the namespace's SocialAccount with spec.default true for the channel. A post "
        "whose account cannot be resolved fails with UnknownAccount, AccountNotAllowed or "
        "AccountChannelMismatch, and nothing is sent. Never a handle or URN: the account's "
        "spec.handle is what n8n posts as.",
    )
    content: Content = Field(description="What is published.")
    target: str = Field(
        default="default",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Deprecated: the post's account decides the n8n target. Kept so that "
        "existing manifests apply; it must equal the account's spec.target (both default to "
        "'default'), else the post fails with AccountTargetMismatch and nothing is sent.",
    )
    suspend: bool = Field(
        default=False,
        description="While true, the post is not dispatched; setting it back to false "
        "reschedules the post.",
    )
    starting_deadline_seconds: int | None = Field(
        default=None,
        alias="startingDeadlineSeconds",
        ge=0,
        le=31536000,
        description="If the operator can first dispatch the post more than this many seconds "
        "after publishAt (it was down, or the post was created late), the post fails with "
        "reason MissedDeadline instead of being published late (a manual retry counts from "
        "its request). Unset: the operator's defaultStartingDeadlineSeconds applies (86400, "
        "one day, unless its administrator changed it; 0 there: late posts are published). "
        "0 here: not a second late.",
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="How transient failures are retried.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        alias="ttlSecondsAfterFinished",
        ge=0,
        le=315360000,
        description="Delete the post this many seconds after it ends Published or Failed "
        "(like a Job's ttlSecondsAfterFinished). Unset: the operator's defaults apply, which "
        "keep finished posts forever unless configured. A Failed post can still be retried "
        "before its TTL passes.",
    )
    edition: int | None = Field(
        default=None,
        ge=1,
        le=1000000,
        description="Publish the same content again on purpose: a post deleted and applied "
        "again is recognised by its fingerprint (namespace, name, channel, account, "
        "publishAt, content) and not published twice; raising edition (unset, then 2, 3...) "
        "makes it a new publication with a ledger record and Idempotency-Key of its own.",
    )
    stale_after_seconds: int | None = Field(
        default=None,
        alias="staleAfterSeconds",
        ge=1,
        le=86400,
        description="How long a post may stay Publishing without n8n's callback before the "
        "attempt counts as a transient failure (operator default: 600).",
    )


class _StatusModel(BaseModel):
    # Status is read back from the server; tolerate fields a newer Herald may write.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class LastError(_StatusModel):
    """The most recent failure."""

    class_: ErrorClass = Field(
        alias="class",
        description="Transient (retried), Permanent, Stale (no callback in time) or Deadline.",
    )
    code: str = Field(
        max_length=128,
        description="Machine-readable code, e.g. HTTP500, Timeout, ConnectError, MissedDeadline.",
    )
    message: str = Field(max_length=1024, description="Human-readable detail.")
    at: Time = Field(description="When the failure was observed.")


class AttemptRecord(_StatusModel):
    """One attempt in the post's history."""

    attempt: int = Field(ge=1, description="The attempt's number, from 1.")
    claimed_at: Time | None = Field(
        default=None, alias="claimedAt", description="When the attempt was claimed."
    )
    finished_at: Time = Field(alias="finishedAt", description="When it ended.")
    outcome: str = Field(
        max_length=32,
        description="Published, Transient, Permanent, Stale or Cancelled.",
    )
    code: str | None = Field(default=None, max_length=128, description="Error code, if any.")
    message: str | None = Field(default=None, max_length=1024, description="Detail, if any.")


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_StatusModel):
    """A condition in the Kubernetes API conventions' form."""

    type: str = Field(max_length=316, description="Published or SpecApplied.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="PascalCase reason for the last transition.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable detail.")
    last_transition_time: Time = Field(
        alias="lastTransitionTime",
        description="When status last changed (not when reason or message did).",
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        ge=0,
        description="The .metadata.generation this condition was computed from.",
    )


class AccountRef(_StatusModel):
    """The account a post was sent as (status.account)."""

    kind: str = Field(description="SocialAccount or ClusterSocialAccount.")
    name: str = Field(max_length=253, description="The account's name.")
    handle: str = Field(max_length=512, description="The account's spec.handle when sent.")


class ScheduledPostStatus(_StatusModel):
    """Written by the operator and the callback sidecar only."""

    phase: Phase | None = Field(
        default=Phase.PENDING,
        description="Pending (new: the operator writes the status first when it claims the "
        "post, and until then dispatches it at spec.publishAt), Scheduled, Publishing, "
        "Retrying, Published, Failed or Suspended.",
    )
    attempt: int = Field(
        default=0, ge=0, description="Attempts claimed so far; the current one while Publishing."
    )
    next_attempt_at: Time | None = Field(
        default=None,
        alias="nextAttemptAt",
        description="When the operator dispatches the next attempt.",
    )
    claimed_at: Time | None = Field(
        default=None, alias="claimedAt", description="When the current attempt was claimed."
    )
    claimed_by: str | None = Field(
        default=None,
        alias="claimedBy",
        max_length=253,
        description="The operator instance that claimed the current attempt.",
    )
    claimed_generation: int | None = Field(
        default=None,
        alias="claimedGeneration",
        ge=0,
        description="The .metadata.generation the current attempt was claimed for: what it "
        "sends, and what an operator taking over an orphaned claim sends again.",
    )
    retry_epoch: int = Field(
        default=0,
        alias="retryEpoch",
        ge=0,
        description="Manual retries handled so far. Part of the Idempotency-Key, so n8n treats "
        "a manual retry as a new publication.",
    )
    retry_base_attempt: int = Field(
        default=0,
        alias="retryBaseAttempt",
        ge=0,
        description="The attempt number at the last manual retry: attempts keep counting for "
        "the post's life, the retry policy counts only those after it.",
    )
    dispatched_at: Time | None = Field(
        default=None,
        alias="dispatchedAt",
        description="When n8n acknowledged the current attempt's webhook.",
    )
    published_at: Time | None = Field(
        default=None, alias="publishedAt", description="When n8n reported the post published."
    )
    external_id: str | None = Field(
        default=None,
        alias="externalId",
        max_length=512,
        description="The post's id on the channel, as n8n reported it.",
    )
    external_url: str | None = Field(
        default=None,
        alias="externalUrl",
        max_length=2048,
        description="The post's URL on the channel, as n8n reported it.",
    )
    last_error: LastError | None = Field(
        default=None, alias="lastError", description="The most recent failure."
    )
    message: str | None = Field(
        default=None,
        max_length=1024,
        description="One line for humans about the current phase (a printer column).",
    )
    history: list[AttemptRecord] | None = Field(
        default=None,
        max_length=HISTORY_LIMIT,
        description=f"The last {HISTORY_LIMIT} attempts, oldest first.",
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description="Published: True once published, False once failed, Unknown before. "
        "SpecApplied: False when the spec changed after the post was dispatched. The kstatus "
        "conditions, for kubectl wait, Flux and Argo CD: Ready (True when Scheduled, "
        "Suspended or Published, False with the reason otherwise), Reconciling (present, "
        "True, while Publishing or Retrying) and Stalled (present, True, when Failed).",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        ge=0,
        description="The .metadata.generation the operator last acted on.",
    )
    account: AccountRef | None = Field(
        default=None,
        description="The account the current attempt was sent as (kind, name, handle), "
        "written with its claim: on a Published post, who published it.",
    )
    last_handled_retry_request: str | None = Field(
        default=None,
        alias="lastHandledRetryRequest",
        max_length=256,
        description="The last value of the herald.dev/retry-requested-at annotation the "
        "operator handled.",
    )


def parse_spec(raw: dict[str, Any]) -> ScheduledPostSpec:
    return ScheduledPostSpec.model_validate(raw)


def parse_status(raw: dict[str, Any] | None) -> ScheduledPostStatus:
    return ScheduledPostStatus.model_validate(raw or {})


# --- the publication ledger (issue #20) -------------------------------------------------

PUBLICATION_KIND = "Publication"
PUBLICATION_PLURAL = "publications"
PUBLICATION_SINGULAR = "publication"
FINGERPRINT_DOC = (
    "The fingerprint names what makes two ScheduledPost objects the same post to its "
    "audience, so that a post deleted (by its TTL, kubectl delete or a GitOps prune) and "
    "applied again is recognised and not published twice: the namespace and name (the "
    "manifest's identity: a different name is a different post), the channel and account "
    "(the same text on another network or page is another post), publishAt (a changed time "
    "is a new announcement: re-scheduling on purpose publishes again), and a SHA-256 of the "
    "content (text, link, media URLs and alt texts: a changed text is a new post). Not in "
    "it: the target (which n8n sends it is plumbing), retry and TTL settings, labels. "
    "spec.edition, when set, is in it: raising it publishes the same content again on purpose."
)


class PublicationState(enum.StrEnum):
    SENDING = "Sending"
    PUBLISHED = "Published"
    FAILED = "Failed"


class PublicationSpec(_Model):
    """One publication of a post, recorded before its first send; written by Herald only."""

    post: str = Field(
        min_length=1, max_length=253, description="Name of the ScheduledPost it records."
    )
    channel: Channel = Field(description="spec.channel of the post.")
    account: str | None = Field(default=None, description="spec.account of the post.")
    publish_at: Time = Field(alias="publishAt", description="spec.publishAt of the post.")
    content_hash: str = Field(
        alias="contentHash",
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 of the post's content (text, link, media URLs and alt texts).",
    )
    state: PublicationState = Field(
        description="Sending: the holder's send has not finished (another object of the "
        "same post waits for it, and takes the record over once the holder's claim and "
        "stale time have passed). Published: it went out; a post with this fingerprint "
        "ends Published with reason AlreadyPublished without being sent. Failed: the "
        "holder failed for good; another object may publish it as a new attempt."
    )
    holder_uid: str = Field(
        alias="holderUid",
        min_length=1,
        max_length=128,
        description="metadata.uid of the ScheduledPost object that sends (or sent) it.",
    )
    since: Time = Field(description="When the holder took the record (its send began).")
    published_at: Time | None = Field(
        default=None, alias="publishedAt", description="When it was published."
    )
    external_id: str | None = Field(
        default=None, alias="externalId", description="The network's id of the post."
    )
    external_url: str | None = Field(
        default=None, alias="externalUrl", description="The published post's URL."
    )


def parse_publication(raw: dict[str, Any]) -> PublicationSpec:
    return PublicationSpec.model_validate(raw)


# --- accounts: who may post as whom (issue #22) ------------------------------------------

ACCOUNT_KIND = "SocialAccount"
ACCOUNT_PLURAL = "socialaccounts"
ACCOUNT_SINGULAR = "socialaccount"
CLUSTER_ACCOUNT_KIND = "ClusterSocialAccount"
CLUSTER_ACCOUNT_PLURAL = "clustersocialaccounts"
CLUSTER_ACCOUNT_SINGULAR = "clustersocialaccount"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
"""A DNS-1123 subdomain: what metadata.name of an account may be."""


class AccountLimits(_Model):
    """How many posts the account may publish per window."""

    posts_per_hour: int | None = Field(
        default=None,
        alias="postsPerHour",
        ge=1,
        le=100000,
        description="Most posts sent as this account per clock hour (UTC), counted when "
        "a post is claimed (once per post and hour): a post over it waits, Scheduled with "
        "reason QuotaExceeded, until the next hour. Unset: no limit.",
    )
    posts_per_day: int | None = Field(
        default=None,
        alias="postsPerDay",
        ge=1,
        le=1000000,
        description="Most posts sent as this account per UTC day, counted as postsPerHour "
        "is. Unset: no limit.",
    )


class SocialAccountSpec(_Model):
    """A network identity that ScheduledPosts in this namespace may publish as."""

    channel: Channel = Field(description="The social network this account is on.")
    target: str = Field(
        default="default",
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="Name of the n8n target (configured in the operator) that publishes as "
        "this account. A post's spec.target, if it names another, fails with "
        "AccountTargetMismatch.",
    )
    handle: str = Field(
        min_length=1,
        max_length=512,
        description="What the network posts as: a LinkedIn author URN "
        "(urn:li:organization:<id>), a page id, @user@instance, a DID. Opaque to Herald; "
        "passed to n8n in the dispatch body's account.handle.",
    )
    display_name: str | None = Field(
        default=None,
        alias="displayName",
        max_length=256,
        description="A name for humans (kubectl herald accounts).",
    )
    limits: AccountLimits | None = Field(
        default=None, description="Posts per hour and per day this account may publish."
    )
    suspend: bool = Field(
        default=False,
        description="While true, posts using the account are held (phase Scheduled, "
        "message naming the account, checked again every 30 s); false releases them.",
    )


class NamespacesFrom(enum.StrEnum):
    ALL = "All"
    SELECTOR = "Selector"


class LabelSelectorRequirement(_Model):
    """One matchExpressions entry of a Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317, description="The label's key.")
    operator: str = Field(
        json_schema_extra={"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        description="In, NotIn, Exists or DoesNotExist.",
    )
    values: list[str] | None = Field(
        default=None,
        max_length=64,
        description="For In and NotIn: the values; empty for Exists and DoesNotExist.",
    )


class LabelSelector(_Model):
    """A Kubernetes label selector: every matchLabels pair and every expression must hold."""

    match_labels: dict[str, str] | None = Field(
        default=None, alias="matchLabels", description="Labels the namespace must have."
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        alias="matchExpressions",
        max_length=16,
        description="Requirements on the namespace's labels.",
    )


class AllowedNamespaces(_Model):
    """Which namespaces' posts may use a ClusterSocialAccount (like Gateway API's
    allowedRoutes.namespaces)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.from != 'Selector' || has(self.selector)",
                    "message": "from: Selector needs a selector",
                    "fieldPath": ".selector",
                    "reason": "FieldValueRequired",
                }
            ]
        },
    )

    from_: NamespacesFrom = Field(
        alias="from",
        description="All: every namespace. Selector: the namespaces whose labels (read "
        "live, at each post's dispatch) match the selector.",
    )
    selector: LabelSelector | None = Field(
        default=None, description="With from: Selector, the namespaces' label selector."
    )

    @model_validator(mode="after")
    def _selector_with_selector(self) -> AllowedNamespaces:
        if self.from_ is NamespacesFrom.SELECTOR and self.selector is None:
            raise ValueError("from: Selector needs a selector")
        return self


class ClusterSocialAccountSpec(SocialAccountSpec):
    """A network identity shared by the namespaces allowedNamespaces admits."""

    allowed_namespaces: AllowedNamespaces | None = Field(
        default=None,
        alias="allowedNamespaces",
        description="Which namespaces' posts may publish as this account. Absent: none.",
    )


class NamespacedAccountSpec(SocialAccountSpec):
    """SocialAccount's spec: SocialAccountSpec plus `default`."""

    default: bool = Field(
        default=False,
        description="This is the namespace's account for its channel: a post in this "
        "namespace without spec.account uses it. With none, or more than one, such a post "
        "fails with UnknownAccount.",
    )


class QuotaWindow(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"


class QuotaUsage(_StatusModel):
    """How much of one limit the account has used in the window it was last counted in."""

    window: QuotaWindow = Field(description="hour (limits.postsPerHour) or day (postsPerDay).")
    start: str = Field(
        max_length=64,
        description="Start of the window counted (UTC, RFC 3339): a clock hour or a UTC day. "
        "An older start than the current window's means no post has been claimed since: "
        "0 used.",
    )
    posts: int = Field(
        ge=0, description="Posts that took one of the window's slots, at the last claim."
    )
    limit: int = Field(ge=1, description="The limit the window was counted against.")


class SocialAccountStatus(_StatusModel):
    """Written by the operator."""

    conditions: list[Condition] | None = Field(
        default=None,
        description="Ready: True when the operator can publish as the account; False with "
        "reason TargetUnknown (spec.target is not configured in the operator) or Suspended.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )
    observed_generation: int | None = Field(
        default=None,
        alias="observedGeneration",
        ge=0,
        description="The .metadata.generation the operator last looked at.",
    )
    usage: list[QuotaUsage] | None = Field(
        default=None,
        max_length=2,
        description="Quota use per limit set in spec.limits, written when a post is "
        "claimed (the count itself is kept in Leases of the operator's namespace and "
        "survives restarts; this is its report). `kubectl herald accounts` shows it.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["window"],
        },
    )


def parse_account(raw: dict[str, Any], cluster: bool) -> SocialAccountSpec:
    model = ClusterSocialAccountSpec if cluster else NamespacedAccountSpec
    return model.model_validate(raw)
