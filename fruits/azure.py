"""Azure Storage (Blob and Queue): credentials, clients and ``az://`` locations, nothing else.

The one module that holds the storage account's credentials. They are resolved in this order
and never come from a committed file:

1. ``azure.use_emulator``: Azurite on 127.0.0.1 with its well-known development account (the
   SDK's ``UseDevelopmentStorage=true``; the key ships with the SDKs, it is not a secret);
2. a connection string in the environment variable named by ``azure.connection_string_env``
   (on Databricks, a secret scope mapped to that variable);
3. ``azure.account_name`` with ``DefaultAzureCredential`` (managed identity, workload identity,
   ``az login``), and delta-rs falling back to the managed identity the same way.

Locations are ``az://<container>/<prefix>``; ``abfs[s]://<container>@<account>.dfs...`` is read
the same way, so one config names a place for delta-rs, the Blob SDK and Spark alike. What the
data means (which blobs are photos, Event Grid messages) lives in :mod:`fruits.sources`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from fruits.errors import ConfigError

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient

    from fruits.config import AzureConfig

__all__ = ["AzureStorage", "BlobInfo", "BlobLocation", "plain_etag"]

_EMULATOR = "UseDevelopmentStorage=true"
# Fail within ~15 s when storage is down instead of the SDK's default ~1 min of retries: a
# failed micro-batch is replayed exactly once by the restart, a stalled one holds everything.
_RETRY_TOTAL, _BACKOFF_S, _BACKOFF_BASE = 3, 2, 2
_EMULATOR_ACCOUNT = "devstoreaccount1"
# Azurite's development account key: public, documented by Microsoft and built into every SDK
# (the SDKs' UseDevelopmentStorage=true); Hadoop's driver has no such shortcut.
_EMULATOR_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_EMULATOR_BLOB = "127.0.0.1:10000"


@dataclass(frozen=True)
class BlobLocation:
    """A container and a name prefix inside it (``""`` or ending in ``/``)."""

    container: str
    prefix: str = ""
    account: str | None = None  # from an abfss:// host; az:// leaves it to the config

    @classmethod
    def parse(cls, url: str) -> BlobLocation:
        parsed = urlparse(url)
        if parsed.scheme == "az":
            container, account = parsed.netloc, None
        elif parsed.scheme in ("abfs", "abfss", "wasb", "wasbs") and "@" in parsed.netloc:
            container, host = parsed.netloc.split("@", 1)
            account = host.split(".", 1)[0]
        else:
            raise ConfigError(f"not a Blob location: {url} (expected az://<container>/<prefix>)")
        if not container:
            raise ConfigError(f"no container in {url}")
        prefix = parsed.path.strip("/")
        return cls(container=container, prefix=f"{prefix}/" if prefix else "", account=account)

    def url(self, name: str = "") -> str:
        """``az://container/name`` for a blob name (full name, prefix included)."""
        return f"az://{self.container}/{name or self.prefix}".rstrip("/")

    def child(self, relative: str) -> str:
        return f"{self.prefix}{relative.lstrip('/')}"


@dataclass(frozen=True)
class BlobInfo:
    """One blob as a listing or an event reports it; ``etag`` changes when it is rewritten."""

    name: str
    etag: str
    size: int
    last_modified: dt.datetime


class AzureStorage:
    """Clients for one storage account, from the ``azure`` config section. Picklable (it holds
    settings only), so Spark tasks rebuild their own clients."""

    def __init__(self, settings: AzureConfig, environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        env = os.environ if environ is None else environ
        self._connection_string = env.get(settings.connection_string_env) or None
        self._blob_service: BlobServiceClient | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the connection string (or a client holding it) into a Spark task or a
        # plan: tasks read it from their own environment.
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    @property
    def mode(self) -> str:
        """How this process authenticates (for logs: never the secret itself)."""
        if self.settings.use_emulator:
            return "Azurite emulator"
        if self._connection_string:
            return f"connection string from ${self.settings.connection_string_env}"
        if self.settings.account_name:
            return f"account {self.settings.account_name} with DefaultAzureCredential"
        return "no credentials"

    @property
    def configured(self) -> bool:
        """Whether the settings name an account at all (the local default names none)."""
        settings = self.settings
        return bool(settings.use_emulator or self._connection_string or settings.account_name)

    def _check(self) -> None:
        settings = self.settings
        if not (settings.use_emulator or self._connection_string or settings.account_name):
            raise ConfigError(
                "Azure storage needs azure.use_emulator, azure.account_name (managed identity) "
                f"or a connection string in ${self.settings.connection_string_env}"
            )

    def _client(self, client_cls: Any, retry_cls: Any, service: str, *args: Any) -> Any:
        """A Blob or Queue client by this account's credentials (the order in the module
        docstring), with the bounded retries."""
        self._check()
        retry = retry_cls(
            initial_backoff=_BACKOFF_S, increment_base=_BACKOFF_BASE, retry_total=_RETRY_TOTAL
        )
        if self.settings.use_emulator:
            return client_cls.from_connection_string(_EMULATOR, *args, retry_policy=retry)
        if self._connection_string:
            return client_cls.from_connection_string(
                self._connection_string, *args, retry_policy=retry
            )
        return client_cls(
            f"https://{self.settings.account_name}.{service}.core.windows.net",
            *args,
            credential=_default_credential(),
            retry_policy=retry,
        )

    def blob_service(self) -> BlobServiceClient:
        """One client per instance: its connection pool serves every call (a discovery pass
        asks for one blob's properties per event)."""
        if self._blob_service is None:
            from azure.storage.blob import BlobServiceClient, ExponentialRetry

            self._blob_service = self._client(BlobServiceClient, ExponentialRetry, "blob")
        return self._blob_service

    def container(self, name: str, *, create: bool = False) -> ContainerClient:
        client = self.blob_service().get_container_client(name)
        if create:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                client.create_container()
        return client

    def queue(self, name: str, *, create: bool = False) -> QueueClient:
        from azure.storage.queue import ExponentialRetry, QueueClient

        client: QueueClient = self._client(QueueClient, ExponentialRetry, "queue", name)
        if create:
            from azure.core.exceptions import ResourceExistsError

            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
        return client

    def delta_storage_options(self) -> dict[str, str]:
        """delta-rs (object_store) options for ``az://`` tables in this account."""
        self._check()
        if self.settings.use_emulator:
            return {"account_name": _EMULATOR_ACCOUNT, "use_emulator": "true"}
        if self._connection_string:
            parts = _parse_connection_string(self._connection_string)
            options = {"account_name": parts.get("AccountName", self.settings.account_name or "")}
            if "AccountKey" in parts:
                options["account_key"] = parts["AccountKey"]
            if "SharedAccessSignature" in parts:
                options["sas_token"] = parts["SharedAccessSignature"]
            if self._emulated:
                options["use_emulator"] = "true"  # an Azurite connection string
            return options
        # No secret: object_store falls back to the managed identity (IMDS), like the SDK.
        return {"account_name": str(self.settings.account_name)}

    def hadoop_url(self, url: str) -> str:
        """The ``abfs[s]://container@account.dfs.core.windows.net/prefix`` Spark reads through
        Hadoop for an ``az://`` location (other URLs are returned as they are)."""
        if not url.startswith("az://"):
            return url
        location = BlobLocation.parse(url)
        scheme = "abfs" if self._emulated else "abfss"
        path = location.prefix.rstrip("/")
        return f"{scheme}://{location.container}@{self._account}.dfs.core.windows.net/{path}"

    def hadoop_options(self) -> dict[str, str]:
        """Hadoop's ABFS driver settings for this account (``spark.hadoop.*`` without the
        prefix). Hadoop 3.5 removed the WASB driver; ABFS reaches a flat-namespace account,
        and Azurite, through its Blob endpoint."""
        self._check()
        host = f"{self._account}.dfs.core.windows.net"
        options: dict[str, str] = {}
        if self._emulated:
            options |= {
                # http://127.0.0.1:10000/<account>/<container>, path-style, as Azurite serves
                "fs.azure.abfs.endpoint": self._emulator_endpoint,
                "fs.azure.always.use.https": "false",
                "fs.azure.account.hns.enabled": "false",
                "fs.azure.fns.account.service.type": "BLOB",
                # the JDK client: Hadoop's default HTTP client wants TLS even for http://
                "fs.azure.networking.library": "JDK_HTTP_URL_CONNECTION",
            }
        key = _EMULATOR_KEY if self.settings.use_emulator else None
        sas = None
        if self._connection_string:
            parts = _parse_connection_string(self._connection_string)
            key, sas = parts.get("AccountKey"), parts.get("SharedAccessSignature")
        if key:
            options[f"fs.azure.account.auth.type.{host}"] = "SharedKey"
            options[f"fs.azure.account.key.{host}"] = key
        elif sas:
            options[f"fs.azure.account.auth.type.{host}"] = "SAS"
            options[f"fs.azure.sas.fixed.token.{host}"] = sas
        else:  # no secret: the machine's managed identity, as DefaultAzureCredential would
            options[f"fs.azure.account.auth.type.{host}"] = "OAuth"
            options[f"fs.azure.account.oauth.provider.type.{host}"] = (
                "org.apache.hadoop.fs.azurebfs.oauth2.MsiTokenProvider"
            )
        return options

    @property
    def _account(self) -> str:
        if self.settings.use_emulator:
            return _EMULATOR_ACCOUNT
        if self._connection_string:
            name = _parse_connection_string(self._connection_string).get("AccountName")
            if name:
                return name
        return str(self.settings.account_name)

    @property
    def _emulator_endpoint(self) -> str:
        if self._connection_string and not self.settings.use_emulator:
            endpoint = _parse_connection_string(self._connection_string).get("BlobEndpoint", "")
            parsed = urlparse(endpoint)
            return f"{parsed.hostname}:{parsed.port or 10000}"
        return _EMULATOR_BLOB

    @property
    def _emulated(self) -> bool:
        """Azurite: the emulator setting, or a connection string to a local blob endpoint."""
        if self.settings.use_emulator:
            return True
        if not self._connection_string:
            return False
        endpoint = _parse_connection_string(self._connection_string).get("BlobEndpoint", "")
        return urlparse(endpoint).hostname in ("127.0.0.1", "localhost")

    def list_blobs(
        self, location: BlobLocation, accept: Callable[[str], bool]
    ) -> Iterator[BlobInfo]:
        """Every photo under ``location`` (the whole listing: O(blobs in the prefix))."""
        container = self.container(location.container)
        for blob in container.list_blobs(name_starts_with=location.prefix or None):
            if accept(blob.name):
                yield BlobInfo(
                    name=blob.name,
                    etag=plain_etag(blob.etag),
                    size=int(blob.size),
                    last_modified=blob.last_modified,
                )

    def blob_info(self, container: str, name: str) -> BlobInfo | None:
        """The blob's current properties, or None when it does not exist (any more)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            props = self.container(container).get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return BlobInfo(name, plain_etag(props.etag), int(props.size), props.last_modified)


def plain_etag(etag: object) -> str:
    """ETags without quotes: listings and Event Grid give ``0x8D..``, a blob's properties
    ``"0x8D.."``; one form, so the same blob version is recognised from either."""
    return str(etag).strip('"')


def _parse_connection_string(text: str) -> dict[str, str]:
    parts = {}
    for item in text.split(";"):
        if "=" in item:
            key, value = item.split("=", 1)
            parts[key.strip()] = value.strip()
    return parts


def _default_credential() -> Any:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()
