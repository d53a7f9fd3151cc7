/* ubroker.h: the C API of the ubroker client library (C11; the same library as the C++ API,
 * <ubroker/client.hpp>, which documents the behaviour in more depth).
 *
 *   ubroker_client* c;
 *   int rc = ubroker_connect(NULL, "thermostat", &c);
 *   if (rc != 0) { fprintf(stderr, "%s: %s\n", ubroker_strerror(rc), ubroker_last_error()); return 1; }
 *   ubroker_publish(c, "sensors.kitchen.temp", "21.5", 4);
 *   ubroker_close(c);
 *
 * Status: every function that can fail returns an int, 0 on success or a negative
 * UBROKER_E_* code. ubroker_strerror() names the code; ubroker_last_error() gives the full
 * sentence of the last failure on the calling thread (why a connect failed, which limit a
 * subscribe hit), valid until that thread's next failing call.
 *
 * Ownership: a function that hands out an object through an out-parameter gives it to the
 * caller, who ends it with the matching function: ubroker_close, ubroker_unsubscribe,
 * ubroker_message_free, ubroker_call_free, ubroker_loan_free, ubroker_options_free. Strings
 * passed in are copied; nothing keeps a pointer the caller passed, except `user`.
 *
 * Threads: all functions may be called from any thread, on the same client at once, except
 * that ubroker_close must be the last call on its client (no call on it may run beside it or
 * follow it). Callbacks (messages, requests, connection events, errors) run on the client's
 * I/O thread, one at a time, in delivery order, or on an application thread while it waits in
 * a call that waits for the broker (it reads the socket itself then), so do not hold a lock a
 * callback takes while making such a call. A callback may publish, subscribe, reply and
 * unsubscribe (there without waiting for the broker), but a call that waits for an answer
 * (ubroker_request, ubroker_flush, ubroker_receive, ubroker_wait_for_responder) fails there at
 * once with UBROKER_E_INVALID_ARGUMENT. After ubroker_unsubscribe or ubroker_close returns, no
 * callback of that subscription or client runs any more, so `user` may be freed then.
 * The threads the library starts (named ubroker-io and ubroker-reconn) block every signal,
 * so a signal sent to the process (Ctrl-C) reaches one of the application's threads.
 *
 * Messages: the message a ubroker_message_fn receives is valid only during the call; keep it
 * with ubroker_message_copy. Messages from ubroker_receive and ubroker_request belong to the
 * caller (ubroker_message_free). A bulk payload (shared memory) is read in place and its
 * space goes back to the sender when the message is freed.
 *
 * Reconnecting: as in the C++ API, a client whose broker goes away dials again by itself and
 * restores its subscriptions and services (ubroker_options_set_reconnect turns it off).
 */
#ifndef UBROKER_UBROKER_H
#define UBROKER_UBROKER_H

#include <stddef.h>
#include <stdint.h>

#include "ubroker/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. -1..-99 are the broker's (ErrorCode in the wire schema, ubroker::Errc in
 * C++), -100.. arise in the client library. */
enum {
  UBROKER_OK = 0,
  UBROKER_E_PROTOCOL = -1,               /* a malformed or unexpected frame */
  UBROKER_E_UNSUPPORTED_VERSION = -2,    /* the broker speaks another protocol version */
  UBROKER_E_HANDSHAKE_TIMEOUT = -3,      /* the handshake did not finish in time */
  UBROKER_E_FRAME_TOO_LARGE = -4,        /* a message larger than the broker's limit */
  UBROKER_E_INVALID_TOPIC = -5,          /* not a valid topic (tokens separated by '.') */
  UBROKER_E_INVALID_PATTERN = -6,        /* not a valid pattern ('*' one token, '>' the rest) */
  UBROKER_E_RESERVED_TOPIC = -7,         /* $sys topics are the broker's */
  UBROKER_E_DUPLICATE_SUBSCRIPTION = -8, /* already subscribed with that id */
  UBROKER_E_UNKNOWN_SUBSCRIPTION = -9,   /* no such subscription */
  UBROKER_E_LIMIT_EXCEEDED = -10,        /* a broker limit (the message says which) */
  UBROKER_E_SLOW_CONSUMER = -11,         /* the broker cut this client off: it read too slowly */
  UBROKER_E_SHUTTING_DOWN = -12,         /* the broker is stopping */
  UBROKER_E_PERMISSION_DENIED = -13,     /* the broker's policy refuses this uid the call */
  UBROKER_E_FD_ERROR = -14,              /* a passed file descriptor was refused */
  UBROKER_E_NO_RESPONDERS = -15,         /* nobody serves the requested topic */
  UBROKER_E_RESPONDER_GONE = -16,        /* the responder disconnected before replying */
  UBROKER_E_TIMEOUT = -17,               /* nothing arrived before the deadline */
  UBROKER_E_UNKNOWN_REQUEST = -18,       /* a reply to a request that is unknown or finished */
  UBROKER_E_KICKED = -19,                /* an operator disconnected this client */
  UBROKER_E_NOT_FOUND = -20,             /* an admin request named something that does not exist */
  UBROKER_E_SHM_REFUSED = -21,           /* the broker refused a shared-memory segment */
  UBROKER_E_FRAME_TIMEOUT = -22,         /* a frame did not arrive whole in time */
  UBROKER_E_INVALID_CONFIG = -23,        /* the broker's config file is invalid (reload) */
  UBROKER_E_SERVICE_ERROR = -24,         /* the responder answered with an error (ubroker_last_service_code) */
  UBROKER_E_INVALID_HEADERS = -25,       /* headers that break the rules of ubroker_header */
  UBROKER_E_CONNECT_FAILED = -100,       /* no broker reachable at the address */
  UBROKER_E_NOT_CONNECTED = -101,        /* the connection is closed */
  UBROKER_E_INVALID_ARGUMENT = -103,     /* unusable arguments (NULL, not UTF-8, wrong thread) */
  UBROKER_E_UNTRUSTED_BROKER = -104,     /* the socket's owner is not a trusted broker uid */
  UBROKER_E_BROKER_GONE = -105,          /* the connection was lost before the broker answered */
  UBROKER_E_BUFFER_FULL = -106,          /* disconnected, and the offline buffer is full */
  UBROKER_E_NO_MEMORY = -120,            /* the library could not allocate */
  UBROKER_E_INTERNAL = -121              /* an unexpected failure inside the library (a bug) */
};

typedef struct ubroker_client ubroker_client;
typedef struct ubroker_options ubroker_options;
typedef struct ubroker_subscription ubroker_subscription;
typedef struct ubroker_message ubroker_message;
typedef struct ubroker_call ubroker_call; /* a request as its responder receives it */
typedef struct ubroker_loan ubroker_loan;

/* One header: key/value metadata sent with a message, request or reply (as NATS headers).
 * Keys: 1..256 bytes of printable ASCII without ':' or spaces, not starting with "ubroker-"
 * (the broker's own); values: UTF-8 without control characters; at most 16 KiB together. A
 * key may repeat. Both strings are NUL-terminated. */
typedef struct ubroker_header {
  const char* key;
  const char* value;
} ubroker_header;

/* Publish flags. */
#define UBROKER_PUBLISH_RETAIN 1u /* keep as the topic's last value (ubroker_publish_retained) */

/* Who sent a message or request: stamped by the broker from the kernel's credentials. */
typedef struct ubroker_sender {
  uint64_t client_id;
  uint32_t uid;
  uint32_t pid;
} ubroker_sender;

/* What happened to a client's traffic across connections (counts since connect). */
typedef struct ubroker_stats {
  uint64_t reconnects;
  uint64_t publishes_buffered;  /* accepted while disconnected (offline buffer) */
  uint64_t publishes_resent;    /* not fully written when a connection broke; sent again */
  uint64_t publishes_discarded; /* never sent (cut off by a reconnect, or unsent at close) */
} ubroker_stats;

/* Connection events (ubroker_connection_fn). */
enum {
  UBROKER_CONNECTED = 0,    /* the first connection is up */
  UBROKER_DISCONNECTED = 1, /* the connection was lost; reconnecting (status says why) */
  UBROKER_RECONNECTED = 2,  /* a new connection is up; subscriptions and services restored */
  UBROKER_CLOSED = 3        /* no more connections (status says why, 0 after ubroker_close) */
};

/* Subscription flags. */
#define UBROKER_SUBSCRIBE_DROP 1u /* the broker drops (and counts) for this subscription while it is full,
                                     instead of holding publishers back */

typedef void (*ubroker_message_fn)(const ubroker_message* msg, void* user);
/* The handler owns `request`: it (or another thread, later) replies with ubroker_call_reply
 * and ends it with ubroker_call_free. */
typedef void (*ubroker_call_fn)(ubroker_call* request, void* user);
typedef void (*ubroker_reply_fn)(int status, ubroker_message* reply, void* user); /* owns reply (NULL on error) */
typedef void (*ubroker_connection_fn)(int event, int status, const char* reason, void* user);
typedef void (*ubroker_error_fn)(int status, const char* message, void* user);

/* ---- Errors ---- */

/* The code's name and meaning, e.g. "NO_RESPONDERS: nobody serves the requested topic".
 * Never NULL; static storage. */
UBROKER_API const char* ubroker_strerror(int status);
/* The sentence of the last failing call on this thread ("" if none). */
UBROKER_API const char* ubroker_last_error(void);
/* After UBROKER_E_SERVICE_ERROR: the code the responder gave (0: none); valid like
 * ubroker_last_error. */
UBROKER_API uint32_t ubroker_last_service_code(void);

/* ---- Options and connecting ---- */

UBROKER_API int ubroker_options_new(ubroker_options** out);
UBROKER_API void ubroker_options_free(ubroker_options* options);
/* A socket path or "@name" (abstract); NULL or "": $UBROKER_FD, $UBROKER_SOCKET,
 * $XDG_RUNTIME_DIR/ubroker.sock, then /run/ubroker/ubroker.sock. */
UBROKER_API int ubroker_options_set_address(ubroker_options* options, const char* address);
UBROKER_API int ubroker_options_set_name(ubroker_options* options, const char* name);
/* Connect and handshake timeout (default 5000 ms). */
UBROKER_API int ubroker_options_set_timeout(ubroker_options* options, int timeout_ms);
/* Nonzero: the first connect retries until its timeout while no broker listens yet (a
 * service started together with the broker). Default 0: fail at once. */
UBROKER_API int ubroker_options_set_wait_for_broker(ubroker_options* options, int wait);
/* Nonzero (the default): reconnect after a lost connection; 0: the client closes. */
UBROKER_API int ubroker_options_set_reconnect(ubroker_options* options, int enabled);
/* Unsent bytes before a publish blocks (default 8 MiB). */
UBROKER_API int ubroker_options_set_max_pending_bytes(ubroker_options* options, size_t bytes);
/* Messages held for ubroker_receive before reading pauses (default 4096). */
UBROKER_API int ubroker_options_set_receive_queue(ubroker_options* options, size_t messages);
/* Publishes of at least `threshold` bytes go through this client's shared-memory ring of
 * `segment_bytes` (defaults 64 KiB and 32 MiB). */
UBROKER_API int ubroker_options_set_shm(ubroker_options* options, size_t threshold, size_t segment_bytes);
/* Bytes of publishes kept while reconnecting (default 0: such publishes fail NOT_CONNECTED). */
UBROKER_API int ubroker_options_set_offline_buffer(ubroker_options* options, size_t bytes);
/* Busy polling: the I/O thread and threads waiting for the broker keep checking for up to
 * this many microseconds (at most 1000000) before they sleep (default 0: sleep at once). */
UBROKER_API int ubroker_options_set_busy_poll(ubroker_options* options, unsigned microseconds);
/* Nonzero: no I/O thread; the application drives the client with ubroker_poll whenever
 * ubroker_fd is readable (or by waiting in a blocking call), and callbacks run on the thread
 * that drives. Default 0: the client's own I/O thread. */
UBROKER_API int ubroker_options_set_manual_io(ubroker_options* options, int manual);
/* Nonzero: writes go out from the client's loop instead of inline on the calling thread, so a
 * burst of publishes leaves in a few large writes (for forwarders and bulk producers; a hand-off
 * of latency more). Default 0. */
UBROKER_API int ubroker_options_set_coalesce_writes(ubroker_options* options, int coalesce);
/* Uids accepted as the broker (default: $UBROKER_BROKER_UID, else this process's uid and root). */
UBROKER_API int ubroker_options_set_trusted_broker_uids(ubroker_options* options, const uint32_t* uids, size_t count);
/* Connection events; runs on the I/O thread. */
UBROKER_API int ubroker_options_set_connection_handler(ubroker_options* options, ubroker_connection_fn fn, void* user);
/* Errors the broker reports about calls nobody waits for (a refused publish); runs on the I/O
 * thread. Without one they are written to stderr. */
UBROKER_API int ubroker_options_set_error_handler(ubroker_options* options, ubroker_error_fn fn, void* user);

/* Connects with default options (address NULL: the default lookup). */
UBROKER_API int ubroker_connect(const char* address, const char* name, ubroker_client** out);
/* Connects with `options` (which the caller still owns and may free at once). */
UBROKER_API int ubroker_connect_with(const ubroker_options* options, ubroker_client** out);
/* Uses an already connected socket; the client owns `fd` from then on, also on failure. */
UBROKER_API int ubroker_adopt(int fd, const ubroker_options* options, ubroker_client** out);
/* Closes the connection and frees the client. Unsent publishes are discarded (flush first).
 * Subscriptions stay allocated until ubroker_unsubscribe, but receive nothing more. */
UBROKER_API void ubroker_close(ubroker_client* client);

UBROKER_API uint64_t ubroker_client_id(const ubroker_client* client); /* the broker's id for it (new on reconnect) */
UBROKER_API int ubroker_connected(const ubroker_client* client);      /* 1 while connected, else 0 */
UBROKER_API int ubroker_client_stats(const ubroker_client* client, ubroker_stats* out);

/* ---- Publishing ---- */

UBROKER_API int ubroker_publish(ubroker_client* client, const char* topic, const void* data, size_t len);
/* Kept as the topic's last value: later matching subscriptions receive it first. An empty
 * retained publish clears the topic. */
UBROKER_API int ubroker_publish_retained(ubroker_client* client, const char* topic, const void* data, size_t len);
/* The same with `header_count` headers (headers may be NULL when the count is 0) and `flags`
 * (UBROKER_PUBLISH_RETAIN). */
UBROKER_API int ubroker_publish_ex(ubroker_client* client, const char* topic, const void* data, size_t len,
                                   const ubroker_header* headers, size_t header_count, unsigned flags);
/* Returns once the broker has processed everything this client sent before the call. */
UBROKER_API int ubroker_flush(ubroker_client* client, int timeout_ms);
/* Reports what operators should see about this client (`count` key/value pairs with the rules
 * of headers; brokerctl clients shows them), replacing the last report; at most 4 KiB encoded.
 * Sent again after a reconnect. A count of 0 clears it. */
UBROKER_API int ubroker_set_status(ubroker_client* client, const ubroker_header* fields, size_t count);
/* A manual client (ubroker_options_set_manual_io): waits up to timeout_ms for work, runs what
 * is ready on the calling thread (callbacks included) and returns how many handlers ran (0:
 * none), or a negative status (UBROKER_E_INVALID_ARGUMENT for a client with its own thread). */
UBROKER_API int ubroker_poll(ubroker_client* client, int timeout_ms);
/* For the application's poll/epoll (POLLIN: ubroker_poll has work). A manual client's fd stays
 * the same across reconnects; otherwise it is the connection's socket (-1 while disconnected). */
UBROKER_API int ubroker_fd(const ubroker_client* client);

/* Shared memory: reserve `size` bytes in this client's ring (waiting up to timeout_ms for
 * space), write the payload into ubroker_loan_data, then ubroker_publish_loan. */
UBROKER_API int ubroker_loan_new(ubroker_client* client, const char* topic, size_t size, int timeout_ms,
                                 ubroker_loan** out);
UBROKER_API void* ubroker_loan_data(ubroker_loan* loan, size_t* len);
/* Publishes the payload in place and frees the loan, whether it succeeds or not. */
UBROKER_API int ubroker_publish_loan(ubroker_client* client, ubroker_loan* loan);
/* Gives an unpublished loan's space back. */
UBROKER_API void ubroker_loan_free(ubroker_loan* loan);

/* ---- Subscribing ---- */

/* Messages on topics matching `pattern` go to `fn` on the I/O thread. */
UBROKER_API int ubroker_subscribe(ubroker_client* client, const char* pattern, ubroker_message_fn fn, void* user,
                                  ubroker_subscription** out);
/* The same, in queue group `group` (NULL: none; each message goes to one member) and with
 * `flags` (UBROKER_SUBSCRIBE_DROP). fn NULL: messages wait for ubroker_receive. */
UBROKER_API int ubroker_subscribe_ex(ubroker_client* client, const char* pattern, const char* group, unsigned flags,
                                     ubroker_message_fn fn, void* user, ubroker_subscription** out);
/* Ends the subscription (waits for the broker's acknowledgement, after which no callback
 * runs) and frees it, also when it fails. */
UBROKER_API int ubroker_unsubscribe(ubroker_subscription* sub);
UBROKER_API uint64_t ubroker_subscription_id(const ubroker_subscription* sub);
/* Messages the broker dropped for this subscription (UBROKER_SUBSCRIBE_DROP) so far. */
UBROKER_API uint64_t ubroker_subscription_dropped(const ubroker_subscription* sub);
/* The next message of any subscription made with fn NULL; timeout_ms < 0 waits forever. */
UBROKER_API int ubroker_receive(ubroker_client* client, int timeout_ms, ubroker_message** out);

/* ---- Messages ---- */

UBROKER_API const char* ubroker_message_topic(const ubroker_message* msg);
UBROKER_API const void* ubroker_message_data(const ubroker_message* msg, size_t* len);
UBROKER_API ubroker_sender ubroker_message_sender(const ubroker_message* msg);
UBROKER_API uint64_t ubroker_message_subscription(const ubroker_message* msg);
UBROKER_API int ubroker_message_retained(const ubroker_message* msg);       /* a retained value, not live traffic */
UBROKER_API uint64_t ubroker_message_dropped_before(const ubroker_message* msg); /* drops since the previous one */
UBROKER_API int ubroker_message_shared_memory(const ubroker_message* msg);  /* payload read in place */
/* Headers: how many there are; the i-th (key and value with their lengths: not
 * NUL-terminated, valid as long as the message); the first value of `key` (NULL if absent). */
UBROKER_API size_t ubroker_message_header_count(const ubroker_message* msg);
UBROKER_API int ubroker_message_header_at(const ubroker_message* msg, size_t i, const char** key, size_t* key_len,
                                          const char** value, size_t* value_len);
UBROKER_API const char* ubroker_message_header(const ubroker_message* msg, const char* key, size_t* value_len);
/* A copy the caller owns (topic, payload and headers copied: keep a message past its callback). */
UBROKER_API int ubroker_message_copy(const ubroker_message* msg, ubroker_message** out);
UBROKER_API void ubroker_message_free(ubroker_message* msg); /* for messages returned to the caller */

/* ---- Request and reply ---- */

/* Sends a request to one responder of `topic` and waits for the reply (the caller owns it).
 * UBROKER_E_NO_RESPONDERS at once when nobody serves the topic, UBROKER_E_RESPONDER_GONE when
 * the responder disconnects, UBROKER_E_TIMEOUT at the deadline, UBROKER_E_SERVICE_ERROR when
 * the responder answered with an error (ubroker_last_error: its sentence,
 * ubroker_last_service_code: its code). */
UBROKER_API int ubroker_request(ubroker_client* client, const char* topic, const void* data, size_t len,
                                int timeout_ms, ubroker_message** reply);
/* The same with headers. */
UBROKER_API int ubroker_request_ex(ubroker_client* client, const char* topic, const void* data, size_t len,
                                   const ubroker_header* headers, size_t header_count, int timeout_ms,
                                   ubroker_message** reply);
/* The same without waiting: `fn` runs once, on the I/O thread. */
UBROKER_API int ubroker_request_async(ubroker_client* client, const char* topic, const void* data, size_t len,
                                      int timeout_ms, ubroker_reply_fn fn, void* user);
/* Answers requests on topics matching `pattern`; `fn` runs on the I/O thread and owns each
 * request. End it with ubroker_unsubscribe. */
UBROKER_API int ubroker_serve(ubroker_client* client, const char* pattern, ubroker_call_fn fn, void* user,
                              ubroker_subscription** out);
/* Returns once some client serves `topic`, or UBROKER_E_TIMEOUT. */
UBROKER_API int ubroker_wait_for_responder(ubroker_client* client, const char* topic, int timeout_ms);

UBROKER_API const char* ubroker_call_topic(const ubroker_call* request);
UBROKER_API const void* ubroker_call_data(const ubroker_call* request, size_t* len);
UBROKER_API ubroker_sender ubroker_call_sender(const ubroker_call* request);
/* The request's headers, as for messages. */
UBROKER_API size_t ubroker_call_header_count(const ubroker_call* request);
UBROKER_API int ubroker_call_header_at(const ubroker_call* request, size_t i, const char** key, size_t* key_len,
                                       const char** value, size_t* value_len);
UBROKER_API const char* ubroker_call_header(const ubroker_call* request, const char* key, size_t* value_len);
/* Replies (at most once), from any thread, at any time before ubroker_call_free. */
UBROKER_API int ubroker_call_reply(ubroker_call* request, const void* data, size_t len);
/* The same with headers. */
UBROKER_API int ubroker_call_reply_ex(ubroker_call* request, const void* data, size_t len,
                                      const ubroker_header* headers, size_t header_count);
/* Answers with an error instead: the requester gets UBROKER_E_SERVICE_ERROR with `message`
 * and `code` (the meaning of codes is the service's own). */
UBROKER_API int ubroker_call_reply_error(ubroker_call* request, uint32_t code, const char* message);
/* For a gateway (a bridge serving a topic by asking another system): `error` is
 * UBROKER_E_NO_RESPONDERS (nobody answered there) or UBROKER_E_TIMEOUT (not in time); the
 * requester gets that error with `message`. */
UBROKER_API int ubroker_call_reply_gateway_error(ubroker_call* request, int error, const char* message);
/* Frees the request; one never replied to ends with a timeout on the requester's side. */
UBROKER_API void ubroker_call_free(ubroker_call* request);

#ifdef __cplusplus
}
#endif

#endif /* UBROKER_UBROKER_H */
