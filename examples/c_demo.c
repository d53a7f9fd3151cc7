/* ubroker-c-demo: the C API end to end against a running broker, in one process: a service
 * answers requests, a subscription receives what is published, and a request to a topic
 * nobody serves fails with UBROKER_E_NO_RESPONDERS. Prints each step; exits 0 when all of
 * them behaved, 1 otherwise. The broker is found as every client finds it ($UBROKER_SOCKET,
 * ...), or at the path given as the only argument.
 *
 *   cc -std=c11 c_demo.c $(pkg-config --cflags --libs ubroker) -o ubroker-c-demo
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <ubroker/ubroker.h>

/* Serves "demo.upper": replies with the request's text in capitals. Runs on the client's
 * I/O thread and owns the request. */
static void on_upper(ubroker_call* request, void* user) {
  (void)user;
  size_t len = 0;
  const char* text = ubroker_call_data(request, &len);
  char reply[256];
  if (len > sizeof reply) len = sizeof reply;
  for (size_t i = 0; i < len; ++i) reply[i] = (char)toupper((unsigned char)text[i]);
  if (ubroker_call_reply(request, reply, len) != 0) {
    fprintf(stderr, "c-demo: reply: %s\n", ubroker_last_error());
  }
  ubroker_call_free(request);
}

static int check(int status, const char* what) {
  if (status == 0) return 1;
  fprintf(stderr, "c-demo: %s: %s (%s)\n", what, ubroker_strerror(status), ubroker_last_error());
  return 0;
}

int main(int argc, char** argv) {
  /* ubroker_connect(address, name, &client) is the short form; the options also let a
   * program started together with the broker wait for it. */
  ubroker_options* options = NULL;
  if (!check(ubroker_options_new(&options), "options")) return 1;
  int ok = check(ubroker_options_set_address(options, argc > 1 ? argv[1] : NULL), "address") &&
           check(ubroker_options_set_name(options, "c-demo"), "name") &&
           check(ubroker_options_set_wait_for_broker(options, 1), "wait_for_broker") &&
           check(ubroker_options_set_timeout(options, 10000), "timeout");
  ubroker_client* client = NULL;
  ok = ok && check(ubroker_connect_with(options, &client), "connect");
  ubroker_options_free(options);
  if (!ok) return 1;

  /* Request and reply. */
  ubroker_subscription* service = NULL;
  ok = ok && check(ubroker_serve(client, "demo.upper", on_upper, NULL, &service), "serve");
  ubroker_message* reply = NULL;
  ok = ok && check(ubroker_request(client, "demo.upper", "hello", 5, 2000, &reply), "request");
  if (ok) {
    size_t len = 0;
    const char* data = ubroker_message_data(reply, &len);
    printf("request demo.upper 'hello' -> '%.*s'\n", (int)len, data);
    ok = len == 5 && memcmp(data, "HELLO", 5) == 0;
    ubroker_message_free(reply);
  }

  /* Publish and subscribe: a subscription without a callback feeds ubroker_receive. */
  ubroker_subscription* sub = NULL;
  ok = ok && check(ubroker_subscribe_ex(client, "demo.>", NULL, 0, NULL, NULL, &sub), "subscribe");
  ok = ok && check(ubroker_publish(client, "demo.greeting", "hi there", 8), "publish");
  ubroker_message* msg = NULL;
  ok = ok && check(ubroker_receive(client, 2000, &msg), "receive");
  if (ok) {
    size_t len = 0;
    const char* data = ubroker_message_data(msg, &len);
    const ubroker_sender from = ubroker_message_sender(msg);
    printf("received %s '%.*s' from client %llu (uid %u, pid %u)\n", ubroker_message_topic(msg), (int)len, data,
           (unsigned long long)from.client_id, from.uid, from.pid);
    ok = strcmp(ubroker_message_topic(msg), "demo.greeting") == 0 && len == 8;
    ubroker_message_free(msg);
  }

  /* Nobody serves demo.nobody: the broker says so at once. */
  if (ok) {
    const int rc = ubroker_request(client, "demo.nobody", "?", 1, 2000, &reply);
    printf("request demo.nobody -> %s\n", ubroker_strerror(rc));
    ok = rc == UBROKER_E_NO_RESPONDERS;
  }

  if (sub) ok = check(ubroker_unsubscribe(sub), "unsubscribe") && ok;
  if (service) ok = check(ubroker_unsubscribe(service), "unsubscribe service") && ok;
  ubroker_close(client);
  printf("%s\n", ok ? "c-demo: all steps behaved" : "c-demo: FAILED");
  return ok ? 0 : 1;
}
