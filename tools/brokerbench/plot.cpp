// write_latency_plot: CSV histograms in, a self-contained SVG out (no fonts or scripts beyond
// what every browser has).
#include "plot.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace ubroker::bench {
namespace {

struct Point {
  double x;   // log10(1 / (1 - q)), q the cumulative fraction
  double us;  // latency
};

constexpr double kWidth = 800, kHeight = 480, kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;
constexpr const char* kColours[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd"};

bool read_points(const std::string& path, std::vector<Point>& out) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return false;  // the header
  while (std::getline(in, line)) {
    double ns = 0, count = 0, cumulative = 0;
    char c1 = 0, c2 = 0;
    std::istringstream fields(line);
    if (!(fields >> ns >> c1 >> count >> c2 >> cumulative)) return false;
    // The last bucket has q = 1 (an infinite x): draw it at the next decade past the rest.
    const double x = cumulative >= 1.0 ? -1 : std::log10(1.0 / (1.0 - cumulative));
    out.push_back({x, ns / 1000});
  }
  if (out.empty()) return false;
  double last = 0;
  for (const auto& p : out) last = std::max(last, p.x);
  for (auto& p : out) {
    if (p.x < 0) p.x = std::floor(last) + 1;
  }
  return true;
}

}  // namespace

bool write_latency_plot(const std::string& svg_path, const std::string& title, const std::vector<PlotSeries>& series) {
  std::vector<std::vector<Point>> lines(series.size());
  double max_x = 1, max_us = 1;
  for (std::size_t i = 0; i < series.size(); ++i) {
    if (!read_points(series[i].csv_path, lines[i])) {
      std::fprintf(stderr, "brokerbench: --plot: cannot read the histogram %s\n", series[i].csv_path.c_str());
      return false;
    }
    for (const auto& p : lines[i]) {
      max_x = std::max(max_x, p.x);
      max_us = std::max(max_us, p.us);
    }
  }
  max_x = std::ceil(max_x);
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  auto sx = [&](double x) { return kLeft + x / max_x * plot_w; };
  auto sy = [&](double us) { return kTop + plot_h - us / max_us * plot_h; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << title << "</text>\n";
  // Percentile ticks: one per decade of 1/(1-q).
  for (int d = 0; d <= static_cast<int>(max_x); ++d) {
    std::string label = d == 0 ? "0%" : d == 1 ? "90%" : "99";
    if (d >= 3) label.append(1, '.').append(static_cast<std::size_t>(d - 2), '9');
    if (d >= 2) label.append(1, '%');
    const double x = sx(d);
    svg << "<line x1=\"" << x << "\" y1=\"" << kTop << "\" x2=\"" << x << "\" y2=\"" << kTop + plot_h
        << "\" stroke=\"#ddd\"/>\n<text x=\"" << x << "\" y=\"" << kTop + plot_h + 18 << "\" text-anchor=\"middle\">"
        << label << "</text>\n";
  }
  for (int t = 0; t <= 5; ++t) {
    const double us = max_us * t / 5, y = sy(us);
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << y << "\" x2=\"" << kLeft + plot_w << "\" y2=\"" << y
        << "\" stroke=\"#ddd\"/>\n<text x=\"" << kLeft - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
        << static_cast<long long>(std::lround(us)) << "</text>\n";
  }
  svg << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << kHeight - 10
      << "\" text-anchor=\"middle\">percentile</text>\n<text x=\"16\" y=\"" << kTop + plot_h / 2
      << "\" transform=\"rotate(-90 16 " << kTop + plot_h / 2 << ")\" text-anchor=\"middle\">round trip (us)</text>\n";
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const char* colour = kColours[i % std::size(kColours)];
    svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\" points=\"";
    for (const auto& p : lines[i]) svg << sx(p.x) << ',' << sy(p.us) << ' ';
    svg << "\"/>\n<text x=\"" << kLeft + 10 << "\" y=\"" << kTop + 16 + 16 * static_cast<double>(i) << "\" fill=\""
        << colour << "\">" << series[i].name << "</text>\n";
  }
  svg << "</svg>\n";
  std::ofstream out(svg_path);
  out << svg.str();
  if (!out) {
    std::fprintf(stderr, "brokerbench: --plot: cannot write %s\n", svg_path.c_str());
    return false;
  }
  return true;
}

}  // namespace ubroker::bench
