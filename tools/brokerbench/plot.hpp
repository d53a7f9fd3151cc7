// --plot: the latency distribution as an SVG a person can look at. The x axis is the
// percentile on a log scale of 1/(1-q) (50%, 90%, 99%, 99.9%, ...), where tails show; the y
// axis is the round trip in microseconds. One line per series (ubroker and its floor).
#pragma once

#include <string>
#include <vector>

namespace ubroker::bench {

struct PlotSeries {
  std::string name;      // legend text
  std::string csv_path;  // a histogram CSV (Histogram::write_csv)
};

// Writes the SVG; false (with the reason on stderr) if a CSV cannot be read or the file written.
bool write_latency_plot(const std::string& svg_path, const std::string& title, const std::vector<PlotSeries>& series);

}  // namespace ubroker::bench
