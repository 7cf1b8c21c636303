"""Email: the `email:` action (§9), its payload (one message per recipient), the email connector's config block
(`connectors.email`: SMTP server and sender) and its local sink (one .eml file per message). The plugin itself,
delivering over SMTP, is connectors/email_smtp.py.

Recipients are the subject contact (`to: contact`), the subject account's contacts with a role
(`to: {role: champion}`, unsubscribed ones left out), or addresses (templated). Only the playbook's author makes
a list of addresses (a YAML list, or commas in a string without expressions): a string with expressions must
render to exactly one address, so a value from data such as `csm@example.com, evil@attacker.example` fails the
action with the reason, and nobody gets the message. Each recipient gets its own
message, rendered with `contact` bound to that recipient, under a stable Message-ID; the suppression list is
checked again when the message is sent."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.email_message import AddressError, build_message, mailbox
from connectors.http import http_url
from engine.actions import (ActionKind, CompileContext, CompiledAction, Payload, PlanContext, Refusal, Rendering,
                            SendCheck)
from engine.consent import unsubscribe_url
from engine.delivery import BaseConnector, Outcome, Receipt
from engine.store.outbox import Claimed
from engine.templating import TemplateProblem, plain_name_problem, render

DEFAULT_SENDER = "Customer Success <cs@localhost>"
PARTS = {"subject": ".subject.j2", "html": ".html.j2", "text": ".txt.j2"}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RoleFilter(Options):
    role: str | list[str]


Recipients = RoleFilter | list[str] | str


class EmailAction(Options):
    """An `email:` action."""

    to: Recipients = Field(description="`contact` (the subject contact), {role: …} (the account's contacts "
                                        "with that role), or addresses (templated)")
    cc: Recipients | None = None
    template: str | None = None
    subject: str | None = None
    body: str | None = None
    reply_to: str | None = None

    @model_validator(mode="after")
    def _content(self) -> EmailAction:
        if self.template and (self.subject or self.body):
            raise ValueError("use either `template` or inline `subject` + `body`, not both")
        if not self.template and not (self.subject and self.body):
            raise ValueError("an email needs `template`, or both `subject` and `body`")
        return self


@dataclass(frozen=True, slots=True)
class Mail(Payload):
    """One message to one recipient."""

    to: str
    subject: str
    message_id: str
    text: str | None = None
    html: str | None = None
    contact_id: str | None = None
    unsubscribe_url: str = ""


@dataclass(frozen=True, slots=True)
class EmailPayload(Payload):
    """An email action as planned: a message per recipient, copies and reply-to address."""

    messages: list[Mail] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    reply_to: str | None = None


def message_id(key: str, n: int) -> str:
    """A stable RFC 5322 Message-ID for the n-th message of an action."""
    digest = hashlib.sha256(f"{key}#{n}".encode()).hexdigest()[:32]
    return f"<{digest}@playbook-engine>"


class EmailKind(ActionKind):
    name = "email"
    options = EmailAction
    payload = EmailPayload
    literal = frozenset({"template", "role"})

    def compile(self, options: Any, ctx: CompileContext) -> tuple[Any, dict[str, Any]]:
        if options.to == "contact" and ctx.subject != "contact":
            ctx.problem(("to",), "`to: contact` needs `subject: contact`",
                        "use a role filter such as `to: {role: champion}`")
        extra = frozenset({"contact"}) if isinstance(options.to, RoleFilter) else frozenset()
        for key in ("to", "cc"):
            value = getattr(options, key)
            for i, text in enumerate(value if isinstance(value, list) else [value]):
                if isinstance(text, str) and _comma_beside_expression(text, ctx):
                    ctx.problem((key, i) if isinstance(value, list) else (key,),
                                "a templated address is one address: commas here would split what the data holds",
                                "write several addresses as a YAML list, one template each")
        fields = ctx.structure(self.dump(options), self.literal, extra)
        return fields, (self._files(options.template, ctx, extra) if options.template else {})

    def _files(self, name: str, ctx: CompileContext, extra: frozenset[str]) -> dict[str, Any]:
        """NAME.subject.j2 and NAME.html.j2 and/or NAME.txt.j2, compiled; and under `locales`, each locale's own
        set (NAME.ja.subject.j2, …), which replaces the default set for recipients of that locale (§16). NAME is a
        plain name: templates are read only from the templates folder."""
        templates, where = ctx.templates, ctx.templates_shown
        not_plain = plain_name_problem(name)
        if not_plain:
            ctx.problem(("template",), f"{not_plain} ({where}/)",
                        "write the NAME of NAME.subject.j2 and NAME.html.j2 or NAME.txt.j2")
            return {}
        files = self._part_set(name, name, ctx, extra)
        locales = {loc: self._part_set(f"{name}.{written}", name, ctx, extra, loc)
                   for loc, written in templates.locales_of(name, tuple(PARTS.values())).items()}
        has_body = templates.exists(name + PARTS["html"]) or templates.exists(name + PARTS["text"])
        if not templates.exists(name + PARTS["subject"]) and not has_body:
            from engine.errors import suggest

            if locales:
                ctx.problem(("template",), f"email template `{name}` has {', '.join(sorted(locales))} files but no "
                            "default-locale ones (for recipients of any other locale)",
                            f"create {where}/{name}.subject.j2 and {name}.html.j2 or {name}.txt.j2")
            else:
                close = suggest(name, templates.names())
                ctx.problem(("template",), f"email template `{name}` not found in {where}/",
                            f"did you mean `{close}`?" if close else
                            f"create {name}.subject.j2 and {name}.html.j2 or {name}.txt.j2")
        elif not templates.exists(name + PARTS["subject"]):
            ctx.problem(("template",), f"email template `{name}` has no subject", f"create {where}/{name}.subject.j2")
        elif not has_body:
            ctx.problem(("template",), f"email template `{name}` has no body",
                        f"create {where}/{name}.html.j2 and/or {name}.txt.j2")
        if locales:
            files["locales"] = locales
        return files

    @staticmethod
    def _part_set(stem: str, name: str, ctx: CompileContext, extra: frozenset[str],
                  locale: str | None = None) -> dict[str, Any]:
        """The compiled parts of one set (STEM.subject.j2, …); a locale's set needs a subject and a body."""
        templates, files = ctx.templates, {}
        for part, suffix in PARTS.items():
            if templates.exists(stem + suffix):
                try:
                    files[part] = templates.compile_file(stem + suffix, ctx.subject, extra)
                except TemplateProblem as exc:
                    ctx.template_problem(stem + suffix, exc)
        if locale is not None:
            missing = [f"{stem}{PARTS[p]}" for p in ("subject",) if not templates.exists(stem + PARTS[p])]
            if not (templates.exists(stem + PARTS["html"]) or templates.exists(stem + PARTS["text"])):
                missing.append(f"{stem}.html.j2 or {stem}.txt.j2")
            if missing:
                ctx.problem(("template",), f"email template `{name}` in locale `{locale}` is incomplete: its files "
                            "replace the default ones for that locale", f"create {ctx.templates_shown}/"
                            + " and ".join(missing))
        return files

    def plan(self, action: CompiledAction, ctx: PlanContext) -> EmailPayload:
        spec, files = action.spec, action.files
        recipients = self._recipients(spec.to, action.fields.get("to"), ctx, "to")
        cc = ([address for address, _ in self._recipients(spec.cc, action.fields.get("cc"), ctx, "cc")]
              if spec.cc is not None else [])
        messages = []
        for n, (address, contact) in enumerate(recipients):
            link = unsubscribe_url(ctx.settings, address)
            mctx = dict(ctx.context, unsubscribe_url=link)
            if contact is not None:          # a contact gets their locale and zone; an address the config's
                mctx.update(ctx.recipient(contact))
            if files:
                parts = _localized(files, mctx["_locale"])
                subject = render(parts["subject"], mctx).strip() if "subject" in parts else ""
                html = render(parts["html"], mctx) if "html" in parts else None
                text = render(parts["text"], mctx) if "text" in parts else None
            else:
                subject = render(action.fields["subject"], mctx).strip()
                text, html = render(action.fields["body"], mctx), None
            messages.append(Mail(address, " ".join(subject.split()), message_id(ctx.key, n), text, html,
                                 contact["id"] if contact else None, link))
        reply_to = ctx.render(action.fields["reply_to"]).strip() if spec.reply_to else None
        if reply_to and not isinstance(action.fields["reply_to"], str):
            _check_address(reply_to, "reply_to")
        return EmailPayload(messages, cc, reply_to)

    def _recipients(self, spec_to: Any, compiled: Any, ctx: PlanContext, key: str) -> list[tuple[str, dict | None]]:
        if spec_to == "contact":
            c = ctx.records.get("contact")
            return [(c["email"], c)] if c and c.get("email") and not c.get("unsubscribed") else []
        if isinstance(spec_to, RoleFilter):
            roles = {spec_to.role} if isinstance(spec_to.role, str) else set(spec_to.role)
            account_id = ctx.records["account"]["id"]
            return [(c["email"], c) for c in ctx.contacts.get(account_id, []) if c.get("email") and c["role"] in roles]
        out = []
        for item in (compiled if isinstance(compiled, list) else [compiled]):
            if isinstance(item, str):           # written by the author, no expression: a list they wrote
                out += [(a.strip(), None) for a in item.split(",") if a.strip()]
                continue
            address = ctx.render(item).strip()  # rendered from data: one address, never split
            if address:
                _check_address(address, key)
                out.append((address, None))
        return out

    def nothing_to_send(self, payload: EmailPayload) -> str | None:
        return None if payload.messages else "no recipient: every candidate is missing or unsubscribed"

    def contact_roles(self, options: Any) -> list[str]:
        roles: list[str] = []
        for spec in (options.to, options.cc):
            if isinstance(spec, RoleFilter):
                roles += [spec.role] if isinstance(spec.role, str) else list(spec.role)
        return roles

    def customer_facing(self, options: Any) -> bool:
        """An email to contacts (`to: contact` or a role) reaches customers; one to addresses is internal."""
        return options.to == "contact" or isinstance(options.to, RoleFilter)

    def per_recipient(self, payload: EmailPayload) -> list[tuple[str | None, EmailPayload]]:
        return [(m.contact_id, replace(payload, messages=[m])) for m in payload.messages]

    def addresses(self, payload: EmailPayload) -> list[str]:
        return [m.to for m in payload.messages]

    def at_send(self, payload: EmailPayload, blocked: set[str], result: dict | None) -> SendCheck:
        """Drop recipients unsubscribed or bounced by now, and messages an earlier attempt delivered."""
        done = set((result or {}).get("delivered") or [])
        stopped = {m.to.lower() for m in payload.messages} & blocked
        keep = [m for m in payload.messages if m.to.lower() not in stopped and m.message_id not in done]
        if not keep:
            if stopped:
                return SendCheck(None, "suppressed", "every recipient is unsubscribed or bounced: "
                                 + ", ".join(sorted(stopped)))
            return SendCheck(None, "sent", "every message was already delivered")
        return SendCheck(payload if len(keep) == len(payload.messages) else replace(payload, messages=keep))

    def summary(self, payload: EmailPayload) -> dict[str, Any]:
        msgs = payload.messages
        return {"to": [m.to for m in msgs], "subject": msgs[0].subject if msgs else None}

    def preview(self, payload: EmailPayload, settings: Any) -> list[Rendering]:
        """Each message decoded (headers, text and HTML as written) and as the .eml a connector sends."""
        sender = sender_of(settings)
        out = []
        for m in payload.messages:
            fields = {"From": sender, "To": m.to, **({"Cc": ", ".join(payload.cc)} if payload.cc else {}),
                      **({"Reply-To": payload.reply_to} if payload.reply_to else {}), "Subject": m.subject}
            if m.unsubscribe_url:
                fields["List-Unsubscribe"] = m.unsubscribe_url
            bodies = {k: v for k, v in (("text", m.text), ("html", m.html)) if v is not None}
            raw = bytes(build_message(m, sender=sender, cc=payload.cc, reply_to=payload.reply_to))
            out.append(Rendering(fields, bodies, raw, ".eml"))
        return out

    def test_copy(self, payload: EmailPayload, address: str) -> EmailPayload:
        """Every message to `address` alone (no copies), its subject marked [TEST], under a Message-ID of its own."""
        nonce = os.urandom(8).hex()
        messages = [replace(m, to=address, subject=TEST_MARK + m.subject, contact_id=None,
                            message_id=message_id(f"test/{nonce}/{m.message_id}", n))
                    for n, m in enumerate(payload.messages)]
        return EmailPayload(messages, [], payload.reply_to)

    def digest_parts(self, payload: EmailPayload) -> list[tuple[str, str, EmailPayload]]:
        """Each address's message; a digest lists its subject line."""
        return [(m.to, m.subject, replace(payload, messages=[m])) for m in payload.messages]

    def digest_message(self, recipient: str, message: Any, key: str) -> EmailPayload:
        return EmailPayload([Mail(recipient, message.subject, message_id(key, 0), message.text or None,
                                  message.html)])


TEST_MARK = "[TEST] "          # the subject prefix of a test send (`playbook preview --send-to`)


def sender_of(settings: Any) -> str:
    """The From address messages go out with: the email connector's `from`, else the local sink's."""
    conf = getattr(settings.connectors, "email", None) if settings.connectors is not None else None
    return getattr(conf, "from_", None) or DEFAULT_SENDER


def _localized(files: dict[str, Any], locale: str) -> dict[str, Any]:
    """The template set for a locale: its own (`ja_JP`, else `ja`) when there is one, else the default."""
    from engine.locales import locale_candidates

    own = files.get("locales") or {}
    return next((own[c] for c in locale_candidates(locale) if c in own), files)


EMAIL = EmailKind()


def _comma_beside_expression(text: str, ctx: CompileContext) -> bool:
    """Whether a templated address string has a comma in its literal text (`"{{ a }}, {{ b }}"`)."""
    from jinja2 import TemplateSyntaxError, nodes

    if "{" not in text:
        return False
    try:
        ast = ctx.templates.text_env.parse(text)
    except TemplateSyntaxError:
        return False                            # reported when the string is compiled
    constant = all(isinstance(node, nodes.Output) and all(isinstance(c, nodes.TemplateData) for c in node.nodes)
                   for node in ast.body)
    return not constant and any("," in n.data for n in ast.find_all(nodes.TemplateData))


def _check_address(address: str, key: str) -> None:
    """A rendered address must be exactly one mailbox: Refusal (the action fails, nothing is sent) otherwise."""
    try:
        mailbox(address)
    except AddressError:
        raise Refusal(f"email `{key}` rendered from data must be exactly one address, not `{address}` (several "
                      "addresses are written as a YAML list in the playbook)") from None


class SmtpSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: SecretStr | None = None
    timeout: float = Field(30.0, gt=0)


class EmailConfig(BaseModel):
    """`connectors.email`: the SMTP server, the sender, and the one-click unsubscribe endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    smtp: SmtpSettings
    from_: str = Field(alias="from")
    reply_to: str | None = None
    unsubscribe_url: str | None = Field(None, description="base URL of the one-click unsubscribe endpoint")
    unsubscribe_secret: SecretStr | None = None

    @field_validator("from_", "reply_to")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None:
            mailbox(v)          # the SMTP connector sends from it: one mailbox, `a@b.example` or `Name <a@b.example>`
        return v

    _url = field_validator("unsubscribe_url")(classmethod(lambda cls, v: http_url(v)))


class EmailSink(BaseConnector):
    """Each email as an RFC 5322 file outbox/email/<key>-<n>.eml; rewriting the same file is harmless."""

    on_ambiguous = "resend"
    batch_safe = True

    def __init__(self, directory: Path, sender: str = DEFAULT_SENDER, name: str = "email"):
        self.name, self.directory, self.sender = name, directory / "email", sender
        self._unsynced: list[Path] = []

    def flush(self) -> None:
        """fsync the files written since the last flush, then the directory (one batch at a time)."""
        if not self._unsynced:
            return
        for path in [*self._unsynced, self.directory]:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._unsynced = []

    def deliver(self, item: Claimed) -> Receipt:
        p: EmailPayload = item.payload
        self.directory.mkdir(parents=True, exist_ok=True)
        written = []
        for n, m in enumerate(p.messages):
            msg = build_message(m, sender=self.sender, cc=p.cc, reply_to=p.reply_to)
            name = f"{_slug(item.dedup_key)}-{n}.eml"
            _atomic_write(self.directory / name, bytes(msg))
            self._unsynced.append(self.directory / name)
            written.append(name)
        return Receipt(Outcome.SENT, f"wrote {len(written)} file(s)", result={"files": written})


def _atomic_write(path: Path, data: bytes) -> None:
    """Write-then-rename, so a reader never sees half a file (made durable by the sink's flush())."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _slug(key: str) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)[:80]
    return f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
