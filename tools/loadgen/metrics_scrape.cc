#include "tools/loadgen/metrics_scrape.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace vocoder::loadgen {
namespace {

absl::StatusOr<double> ParseValue(absl::string_view v) {
  if (v == "+Inf") return std::numeric_limits<double>::infinity();
  if (v == "-Inf") return -std::numeric_limits<double>::infinity();
  if (v == "NaN") return std::nan("");
  double d = 0;
  if (!absl::SimpleAtod(v, &d)) return absl::InvalidArgumentError(absl::StrCat("bad value ", v));
  return d;
}

// Reads `{k="v",...}` starting at s[i] == '{'; leaves i after the '}'.
bool ParseLabels(const std::string& s, size_t& i, std::map<std::string, std::string>& out) {
  ++i;
  while (i < s.size() && s[i] != '}') {
    const size_t eq = s.find('=', i);
    if (eq == std::string::npos || eq + 1 >= s.size() || s[eq + 1] != '"') return false;
    std::string key(absl::StripAsciiWhitespace(s.substr(i, eq - i)));
    std::string value;
    size_t j = eq + 2;
    for (; j < s.size() && s[j] != '"'; ++j) {
      if (s[j] == '\\' && j + 1 < s.size()) {
        ++j;
        value += s[j] == 'n' ? '\n' : s[j];
      } else {
        value += s[j];
      }
    }
    if (j >= s.size()) return false;
    out[key] = value;
    i = j + 1;
    if (i < s.size() && s[i] == ',') ++i;
  }
  if (i >= s.size()) return false;
  ++i;
  return true;
}

}  // namespace

absl::StatusOr<std::vector<Sample>> ParseMetrics(const std::string& text) {
  std::vector<Sample> out;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    const std::string l(line);
    Sample s;
    size_t i = l.find_first_of("{ ");
    if (i == std::string::npos || i == 0) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": ", l));
    }
    s.name = l.substr(0, i);
    if (l[i] == '{' && !ParseLabels(l, i, s.labels)) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": bad labels"));
    }
    std::vector<absl::string_view> rest = absl::StrSplit(
        absl::StripAsciiWhitespace(absl::string_view(l).substr(i)), ' ', absl::SkipEmpty());
    if (rest.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("metrics line ", line_no, ": no value"));
    }
    auto v = ParseValue(rest[0]);
    if (!v.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics line ", line_no, ": ", v.status().message()));
    }
    s.value = *v;
    out.push_back(std::move(s));
  }
  return out;
}

absl::StatusOr<std::string> HttpGet(const std::string& url) {
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "http://")) {
    return absl::InvalidArgumentError(absl::StrCat("metrics URL must start with http://: ", url));
  }
  const size_t slash = rest.find('/');
  const std::string hostport(rest.substr(0, slash));
  const std::string path = slash == absl::string_view::npos ? "/" : std::string(rest.substr(slash));
  const size_t colon = hostport.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("metrics URL needs host:port: ", url));
  }
  std::string host = hostport.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  const std::string port = hostport.substr(colon + 1);

  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return absl::UnavailableError(absl::StrCat("resolve ", hostport, ": ", gai_strerror(rc)));
  }
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) return absl::UnavailableError(absl::StrCat("connect to ", hostport, " failed"));
  const std::string req = absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", hostport, "\r\n\r\n");
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("send to ", hostport, " failed"));
  }
  std::string resp;
  char buf[16384];
  for (ssize_t n; (n = recv(fd, buf, sizeof buf, 0)) > 0;) resp.append(buf, static_cast<size_t>(n));
  close(fd);
  const size_t body = resp.find("\r\n\r\n");
  if (body == std::string::npos || resp.compare(0, 5, "HTTP/") != 0) {
    return absl::UnavailableError(absl::StrCat("no HTTP answer from ", url));
  }
  const size_t sp = resp.find(' ');
  if (resp.compare(sp + 1, 3, "200") != 0) {
    return absl::UnavailableError(
        absl::StrCat(url, " answered ", resp.substr(sp + 1, resp.find('\r') - sp - 1)));
  }
  return resp.substr(body + 4);
}

double Sum(const std::vector<Sample>& s, const std::string& name,
           const std::map<std::string, std::string>& match) {
  double total = 0;
  for (const auto& x : s) {
    if (x.name != name) continue;
    bool ok = true;
    for (const auto& [k, v] : match) {
      auto it = x.labels.find(k);
      ok = ok && it != x.labels.end() && it->second == v;
    }
    if (ok) total += x.value;
  }
  return total;
}

std::map<std::string, double> SumBy(const std::vector<Sample>& s, const std::string& name,
                                    const std::string& label) {
  std::map<std::string, double> out;
  for (const auto& x : s) {
    if (x.name != name) continue;
    auto it = x.labels.find(label);
    out[it == x.labels.end() ? "" : it->second] += x.value;
  }
  return out;
}

double HistogramQuantile(const std::vector<std::pair<double, double>>& buckets, double q) {
  if (buckets.empty() || buckets.back().second <= 0) return 0;
  const double rank = q * buckets.back().second;
  double lower = 0, below = 0;
  for (const auto& [upper, count] : buckets) {
    if (count >= rank) {
      if (std::isinf(upper)) return lower;  // Prometheus: the highest finite bound
      const double in = count - below;
      return in <= 0 ? upper : lower + (upper - lower) * (rank - below) / in;
    }
    lower = upper;
    below = count;
  }
  return lower;
}

namespace {

// Cumulative buckets of histogram `name` (summed over its other labels),
// `after` minus `before`, sorted by upper bound.
std::vector<std::pair<double, double>> BucketDelta(const std::vector<Sample>& before,
                                                   const std::vector<Sample>& after,
                                                   const std::string& name) {
  std::map<double, double> m;
  for (const auto& [le, v] : SumBy(after, name + "_bucket", "le")) {
    if (auto d = ParseValue(le); d.ok()) m[*d] += v;
  }
  for (const auto& [le, v] : SumBy(before, name + "_bucket", "le")) {
    if (auto d = ParseValue(le); d.ok()) m[*d] -= v;
  }
  return {m.begin(), m.end()};
}

std::string Range(double lower, double upper) {
  auto i = [](double x) { return absl::StrCat(static_cast<long long>(std::llround(x))); };
  if (std::isinf(upper)) return absl::StrCat(">", i(lower));
  if (std::floor(lower) + 1 >= upper) return i(upper);
  return absl::StrCat(i(std::floor(lower) + 1), "-", i(upper));
}

}  // namespace

ServerDelta Diff(const std::vector<Sample>& before, const std::vector<Sample>& after,
                 double wall_s) {
  auto delta = [&](const std::string& name, const std::map<std::string, std::string>& m = {}) {
    return Sum(after, name, m) - Sum(before, name, m);
  };
  auto delta_by = [&](const std::string& name, const std::string& label) {
    auto a = SumBy(after, name, label);
    for (const auto& [k, v] : SumBy(before, name, label)) a[k] -= v;
    std::map<std::string, double> out;
    for (const auto& [k, v] : a) {
      if (v != 0) out[k] = v;
    }
    return out;
  };
  ServerDelta d;
  d.batches = delta("vocoder_batches_total");
  d.items = delta("vocoder_batch_items_total");
  d.triggers = delta_by("vocoder_batches_total", "trigger");
  d.rejections = delta_by("vocoder_rejections_total", "reason");
  double lower = 0, below = 0;
  for (const auto& [upper, count] : BucketDelta(before, after, "vocoder_batch_size")) {
    if (count - below > 0) d.batch_sizes[Range(lower, upper)] = count - below;
    lower = upper;
    below = count;
  }
  const double waits = delta("vocoder_queue_wait_seconds_count");
  if (waits > 0) d.queue_wait_mean_ms = 1e3 * delta("vocoder_queue_wait_seconds_sum") / waits;
  d.queue_wait_p95_ms =
      1e3 * HistogramQuantile(BucketDelta(before, after, "vocoder_queue_wait_seconds"), 0.95);
  const double computes = delta("vocoder_batch_compute_seconds_count");
  if (computes > 0) d.compute_mean_ms = 1e3 * delta("vocoder_batch_compute_seconds_sum") / computes;
  if (wall_s > 0) d.gpu_busy_share = delta("vocoder_gpu_busy_seconds_total") / wall_s;
  const double frames = delta("vocoder_batch_frames_total");
  if (frames > 0) d.padding_waste = delta("vocoder_padding_frames_total") / frames;
  return d;
}

}  // namespace vocoder::loadgen
