// The daemons' side of a control connection, written once: framed JSON (framing.h) read by an
// asynchronous loop, one write in flight with a queue behind it, close after the last write, and
// the limits that keep a peer from holding the daemon's memory or sockets (docs/protocol.md):
// small frames and a short deadline until the peer authenticates, an idle time-out after, a cap on
// the bytes queued for a peer that does not read, and, in the ConnectionSet that accepts them, a
// cap on connections (the oldest unauthenticated one makes room for a new one, so that a flood of
// silent connections cannot lock real clients out). A handler's exception is caught here: the peer
// gets an error naming the request and what went wrong, and the connection and the daemon serve on.
// Every member runs on the io_context's one thread except PostSend.
#pragma once

// Boost 1.74's asio/awaitable.hpp uses std::exchange without including <utility>, so the standard
// headers must come first (and clang-format must not sort boost in among them).
// clang-format off
#include <array>
#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <utility>

#include <boost/asio.hpp>
#include <nlohmann/json.hpp>
// clang-format on

#include "runtime/core/status.h"
#include "runtime/net/framing.h"

namespace moreh::net {

struct ConnectionLimits {
  uint32_t max_frame_before_auth = kMaxFrameBytesBeforeAuth;
  uint32_t max_frame = kMaxFrameBytes;
  std::chrono::milliseconds auth_timeout{5000};   // from accept to a successful hello
  std::chrono::milliseconds idle_timeout{30000};  // without a message, once authenticated
  size_t max_queued_bytes = 64 << 20;             // replies a peer has not read yet
  size_t max_connections = 512;
  size_t max_unauthenticated = 64;
  Status Validate() const;
};

class ConnectionSet;

class JsonConnection : public std::enable_shared_from_this<JsonConnection> {
 public:
  // A message, in order. Non-OK: the peer is answered with the error and the connection closed
  // (a refusal that keeps the connection is the handler's own Send).
  using Handler = std::function<Status(const nlohmann::json&)>;

  JsonConnection(boost::asio::ip::tcp::socket socket, ConnectionSet* set);
  // Starts reading; on_close runs once, when the connection ends for any reason.
  void Start(Handler on_message, std::function<void()> on_close);
  void Send(const nlohmann::json& m);
  // Send from another thread (a job thread's reply).
  void PostSend(nlohmann::json m);
  // Answers with an error and closes once it is written.
  void Fail(const Status& s, std::string_view request = "");
  void Close();
  // The peer proved who it is: larger frames, and the idle time-out instead of the deadline.
  void Authenticated();
  // While held (a request in flight, a job that belongs to the connection), the idle time-out
  // does not apply.
  void Hold() { ++holds_; }
  void Unhold() {
    if (holds_ > 0) --holds_;
  }
  bool authenticated() const { return authenticated_; }
  bool open() const { return !closed_; }
  const std::string& peer() const { return peer_; }

 private:
  friend class ConnectionSet;
  void Read();
  void Write();
  void ArmTimer(std::chrono::milliseconds after);
  void Dispatch(const nlohmann::json& m);

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer timer_;
  ConnectionSet* set_;
  std::string peer_;
  FrameDecoder decoder_;
  std::array<char, 16384> buf_;
  std::deque<std::string> out_;
  size_t queued_bytes_ = 0;
  int holds_ = 0;
  Handler on_message_;
  std::function<void()> on_close_;
  bool authenticated_ = false, closing_ = false, closed_ = false;
  std::list<std::weak_ptr<JsonConnection>>::iterator unauth_pos_;  // in the set's waiting list
};

// The connections of one daemon: accepts them on an acceptor, enforces the caps, stops them all.
class ConnectionSet {
 public:
  ConnectionSet(boost::asio::io_context& io, ConnectionLimits limits);
  ~ConnectionSet();
  // Accepts until the acceptor closes; each admitted connection is handed to on_accept, which
  // calls Start. A failing accept (out of file descriptors) is retried after a pause.
  void AcceptOn(boost::asio::ip::tcp::acceptor& acceptor,
                std::function<void(std::shared_ptr<JsonConnection>)> on_accept);
  // An outgoing connection (a worker's to the scheduler): counted here, never evicted as
  // unauthenticated (this side chose its peer). The caller Starts it.
  std::shared_ptr<JsonConnection> Adopt(boost::asio::ip::tcp::socket socket);
  void CloseAll();
  size_t size() const { return all_.size(); }
  size_t unauthenticated() const { return waiting_.size(); }
  const ConnectionLimits& limits() const { return limits_; }

 private:
  friend class JsonConnection;
  void Admit(std::shared_ptr<JsonConnection> c);
  void Remove(JsonConnection* c);
  void Accept(boost::asio::ip::tcp::acceptor& acceptor);

  boost::asio::io_context& io_;
  ConnectionLimits limits_;
  std::function<void(std::shared_ptr<JsonConnection>)> on_accept_;
  std::unique_ptr<boost::asio::steady_timer> retry_;
  std::vector<std::shared_ptr<JsonConnection>> all_;
  std::list<std::weak_ptr<JsonConnection>> waiting_;  // unauthenticated, oldest first
};

// Raises this process's soft limit on open files to the hard one (a daemon's connections).
void RaiseFileLimit();

// Periodic work on an io_context (the scheduler's tick, a worker's heartbeat): fn every period,
// the first one period after Start, until Stop or the context ends.
class Periodic {
 public:
  explicit Periodic(boost::asio::io_context& io) : timer_(io) {}
  void Start(std::chrono::milliseconds period, std::function<void()> fn);
  void Stop();

 private:
  void Arm();
  boost::asio::steady_timer timer_;
  std::chrono::milliseconds period_{1000};
  std::function<void()> fn_;
  bool running_ = false;
};

}  // namespace moreh::net
