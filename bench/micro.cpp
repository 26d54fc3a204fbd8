// Google Benchmark micro-benchmarks of the hot paths.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "http_parser.h"
#include "hub.h"
#include "message.h"
#include "ring_buffer.h"
#include "sse.h"

namespace {

void BM_DecodeAndValidateJson(benchmark::State& state) {
  std::string body = R"({"user":"alice","text":"hello there, how is the deploy going today?"})";
  for (auto _ : state) benchmark::DoNotOptimize(sse::decode_post("application/json", body));
}
BENCHMARK(BM_DecodeAndValidateJson);

void BM_BuildFrame(benchmark::State& state) {
  for (auto _ : state) {
    std::string json = sse::message_json(
        {42, "general", "alice", "hello there, how is the deploy going today?", 1764072000123});
    benchmark::DoNotOptimize(sse::message_frame(42, json));
  }
}
BENCHMARK(BM_BuildFrame);

void BM_ParseRequest(benchmark::State& state) {
  std::string req =
      "POST /messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: "
      "*/*\r\n"
      "Content-Type: application/json\r\nContent-Length: "
      "31\r\n\r\n{\"user\":\"alice\",\"text\":\"hello\"}";
  sse::HttpLimits limits;
  sse::RequestParser parser(limits);
  for (auto _ : state) {
    auto r = parser.feed(req.data(), req.size());
    benchmark::DoNotOptimize(r);
    parser.next_request();
  }
}
BENCHMARK(BM_ParseRequest);

// Enqueue `frames` references and flush them with one writev to /dev/null.
void BM_RingEnqueueAndFlush(benchmark::State& state) {
  sse::FrameRef frame(
      "id: 42\ndata: {\"id\":42,\"user\":\"alice\",\"text\":\"hello\",\"ts\":1764072000123}\n\n");
  sse::FrameRing ring(1024);
  int devnull = open("/dev/null", O_WRONLY);
  iovec iov[256];
  for (auto _ : state) {
    for (int i = 0; i < state.range(0); ++i) (void)ring.push(frame);
    size_t n = ring.fill_iovec(iov, 256);
    ssize_t w = writev(devnull, iov, static_cast<int>(n));
    ring.consume(static_cast<size_t>(w));
  }
  close(devnull);
  state.SetItemsProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RingEnqueueAndFlush)->Arg(1)->Arg(16)->Arg(256);

struct RingSubscriber : sse::Sink {
  explicit RingSubscriber(sse::Hub& hub) : sub(hub, *this, "") {}
  sse::FrameRing ring{1024};
  sse::Subscription sub;
  bool deliver(const sse::FrameRef& f) override { return ring.push(f); }
  size_t free_slots() const override { return ring.free_slots(); }
};

// One publish reaching 10,000 in-memory subscribers: the per-delivery cost of the fan-out itself.
void BM_BroadcastTo10kSubscribers(benchmark::State& state) {
  sse::Hub hub(sse::HubOptions{});
  std::vector<std::unique_ptr<RingSubscriber>> subs;
  for (int i = 0; i < 10000; ++i) {
    subs.push_back(std::make_unique<RingSubscriber>(hub));
    hub.subscribe(subs.back()->sub, {"general"}, std::nullopt);
  }
  uint64_t id = 1;
  for (auto _ : state) {
    std::string json = sse::message_json({id, "general", "alice", "hello", 0});
    hub.on_committed(id, "general", sse::message_frame(id, json), false);
    ++id;
    state.PauseTiming();
    for (auto& s : subs) s->ring.clear();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(state.iterations() * 10000);
}
BENCHMARK(BM_BroadcastTo10kSubscribers);

}  // namespace

BENCHMARK_MAIN();
