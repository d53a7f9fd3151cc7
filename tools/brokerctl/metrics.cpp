// prometheus_text (see metrics.hpp).
#include "metrics.hpp"

#include <google/protobuf/descriptor.h>

#include <set>
#include <string_view>

namespace ubroker::ctl {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// BrokerStatus fields that are levels (may go down), not running totals.
const std::set<std::string_view> kGauges = {
    "uptime_ms",  "connections",  "subscriptions", "requests_pending", "retained_topics", "retained_bytes",
    "shm_segments", "shm_bytes",  "bulk_held",     "deliveries_queued", "open_fds",       "fd_limit",
    "fds_queued", "memory_bytes", "rss_bytes",     "memory_limit_bytes_per_uid", "pid"};

bool numeric(const FieldDescriptor* f) {
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
    case FieldDescriptor::CPPTYPE_INT64:
    case FieldDescriptor::CPPTYPE_UINT32:
    case FieldDescriptor::CPPTYPE_UINT64:
    case FieldDescriptor::CPPTYPE_DOUBLE:
    case FieldDescriptor::CPPTYPE_FLOAT:
    case FieldDescriptor::CPPTYPE_BOOL: return true;
    default: return false;
  }
}

std::string value_of(const Message& m, const FieldDescriptor* f) {
  const auto* r = m.GetReflection();
  switch (f->cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32: return std::to_string(r->GetInt32(m, f));
    case FieldDescriptor::CPPTYPE_INT64: return std::to_string(r->GetInt64(m, f));
    case FieldDescriptor::CPPTYPE_UINT32: return std::to_string(r->GetUInt32(m, f));
    case FieldDescriptor::CPPTYPE_UINT64: return std::to_string(r->GetUInt64(m, f));
    case FieldDescriptor::CPPTYPE_DOUBLE: return std::to_string(r->GetDouble(m, f));
    case FieldDescriptor::CPPTYPE_FLOAT: return std::to_string(r->GetFloat(m, f));
    case FieldDescriptor::CPPTYPE_BOOL: return r->GetBool(m, f) ? "1" : "0";
    default: return "0";
  }
}

// A label value: backslash, double quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const std::string& name, std::string_view type, std::string_view help) {
  out += "# HELP " + name + " " + std::string(help) + "\n";
  out += "# TYPE " + name + " " + std::string(type) + "\n";
}

}  // namespace

std::string prometheus_text(const wire::BrokerStatus& status) {
  std::string out;
  header(out, "ubroker_info", "gauge", "the broker's version, socket and access policy (always 1)");
  out += "ubroker_info{version=\"" + label(status.version()) + "\",socket=\"" + label(status.socket()) +
         "\",policy=\"" + label(status.policy()) + "\"} 1\n";
  const auto* d = status.GetDescriptor();
  for (int i = 0; i < d->field_count(); ++i) {
    const FieldDescriptor* f = d->field(i);
    if (f->is_repeated() || !numeric(f)) continue;
    const bool gauge = kGauges.contains(f->name());
    const std::string name = "ubroker_" + f->name() + (gauge ? "" : "_total");
    header(out, name, gauge ? "gauge" : "counter", "brokerctl status: " + f->name());
    out += name + " " + value_of(status, f) + "\n";
  }
  header(out, "ubroker_errors_sent_total", "counter", "Error frames sent and connections refused, by error code");
  for (const auto& [code, n] : status.errors_sent()) {
    out += "ubroker_errors_sent_total{code=\"" + label(code) + "\"} " + std::to_string(n) + "\n";
  }
  // What each uid makes the broker hold (docs/security.md); `limited` is a running total.
  const auto* u = wire::UidUsage::descriptor();
  for (int i = 0; i < u->field_count(); ++i) {
    const FieldDescriptor* f = u->field(i);
    if (f->name() == "uid" || !numeric(f)) continue;
    const bool total = f->name() == "limited";
    const std::string name = "ubroker_uid_" + f->name() + (total ? "_total" : "");
    header(out, name, total ? "counter" : "gauge", "brokerctl status, per uid: " + f->name());
    for (const auto& usage : status.uids()) {
      out += name + "{uid=\"" + std::to_string(usage.uid()) + "\"} " + value_of(usage, f) + "\n";
    }
  }
  return out;
}

}  // namespace ubroker::ctl
